"""JobService servicer (grpc.aio)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc
from nats.aio.client import Client as NATS

from services.common import messaging
from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from services.common.identity import (
    IDEMPOTENCY_KEY_RULE,
    USER_ID_RULE,
    is_valid_idempotency_key,
    is_valid_user_id,
)
from services.common.keys import FILENAME_RULE, is_valid_filename, job_prefix, object_key
from services.common.protobuf import NOT_JSON, from_struct
from services.common.refusals import limit_trailer
from services.common.status import TERMINAL, status_name
from services.common.storage_client import StorageClient
from services.common.task_types import is_valid_task_type
from services.jobs import metrics
from services.jobs.convert import job_to_proto, task_to_proto
from services.jobs.limits import LimitExceededError, UserLimits, remaining_bytes
from services.jobs.models import JobState, NewInput
from services.jobs.outbox import Outbox
from services.jobs.publisher import TaskPublisher
from services.jobs.repository import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidCursorError,
    JobExistsError,
    Repository,
)
from services.jobs.rules import series_problem
from services.jobs.watch import Rank, WatchHub, job_rank

log = logging.getLogger(__name__)


def series_of(request_input: jobs_pb2.JobInput) -> tuple[tuple[str, str], ...]:
    return tuple((s.series_instance_uid, s.name) for s in request_input.series)

# WatchJob re-reads this often even without a notice (a lost core-NATS message, a NATS outage).
WATCH_RECHECK_SECONDS = 3.0
JOB_NOT_FOUND = "job not found"
TASK_NOT_FOUND = "task not found"


BAD_KEY = f"idempotency_key must be {IDEMPOTENCY_KEY_RULE}"


class JobService(jobs_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repository,
        nc: NATS,
        publisher: TaskPublisher,
        hub: WatchHub,
        storage: StorageClient,
        outbox: Outbox,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.nc = nc
        self.publisher = publisher
        self.hub = hub
        self.storage = storage
        self.outbox = outbox
        self.limits = UserLimits.from_settings(settings)

    async def _user(self, user_id: str, context: grpc.aio.ServicerContext) -> str:
        if not is_valid_user_id(user_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid user id: {USER_ID_RULE}",
            )
        return user_id

    async def _job(self, user_id: str, job_id: str, context: grpc.aio.ServicerContext) -> JobState:
        job = await self.repo.get_job(user_id, job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, JOB_NOT_FOUND)
        assert job is not None
        return job

    # --- unary calls ---

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        job_id = request.job_id or str(uuid.uuid4())
        try:
            job_id = str(uuid.UUID(job_id))
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id must be a UUID")
        if not is_valid_task_type(request.task_type):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_type must be an operation name")
        if not request.inputs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a job needs at least one input file")
        names = [i.filename for i in request.inputs]
        if not all(map(is_valid_filename, names)) or len({n.lower() for n in names}) != len(names):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input file names must be unique (ignoring case) and each {FILENAME_RULE}",
            )
        # A job owns exactly its own folder: no reading another job's (or user's) files, and
        # DeleteJob's DeletePrefix removes every input.
        if any(i.key != object_key(user, job_id, i.filename) for i in request.inputs):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "each input key must be {user_id}/{job_id}/{filename}"
            )

        try:
            params = from_struct(request.params)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NOT_JSON)

        if (problem := series_problem(request.inputs)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        key = request.idempotency_key
        if key and not is_valid_idempotency_key(key):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, BAD_KEY)
        inputs = [
            NewInput(i.filename, i.key, i.format, i.size, series_of(i))
            for i in request.inputs
        ]
        try:
            job = await self.repo.create_job(
                job_id=job_id, user_id=user, task_type=request.task_type, params=params, inputs=inputs,
                limits=self.limits, idempotency_key=key,
            )
        except JobExistsError as exc:
            if exc.job is not None and exc.job.user_id == user:
                return job_to_proto(exc.job)  # a retried CreateJob (same job id or key): same answer
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "job id already in use")
        except LimitExceededError as exc:
            await self._refuse(exc, context)
        metrics.JOBS_CREATED.inc()
        await self.outbox.dispatch()  # publishes its tasks now, as far as its user's share allows
        return job_to_proto(job)

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        if request.job_id or not request.idempotency_key:
            return job_to_proto(await self._job(user, request.job_id, context))
        if not is_valid_idempotency_key(request.idempotency_key):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, BAD_KEY)
        job = await self.repo.get_job_by_key(user, request.idempotency_key)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, JOB_NOT_FOUND)
        assert job is not None
        return job_to_proto(job)

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        limit = request.limit or DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_LIMIT}")
        if request.status not in common_pb2.Status.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown status {request.status}")
        try:
            status = status_name(request.status) if request.status else None  # UNSPECIFIED: any
            jobs, cursor = await self.repo.list_jobs(user, status=status, limit=limit, cursor=request.cursor)
        except InvalidCursorError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid cursor")
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs], next_cursor=cursor)

    async def GetTask(self, request: jobs_pb2.GetTaskRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        task = await self.repo.get_task(user, request.task_id)
        if task is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, TASK_NOT_FOUND)
        return task_to_proto(task)

    async def _cancel(self, user: str, job_id: str, context: grpc.aio.ServicerContext, *,
                      purge: bool = False) -> JobState:
        job, changed = await self.repo.cancel_job(user, job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, JOB_NOT_FOUND)
        assert job is not None
        if changed or purge:
            try:
                await messaging.purge_job_tasks(self.publisher.js, job_id)
            except Exception as exc:  # a processor that still runs them drops them: events are ignored
                log.warning("purging queued tasks failed: %s", exc, extra={"job_id": job_id})
        if changed:
            try:
                await self.nc.publish(messaging.JOB_CANCELLED_SUBJECT, job_id.encode())
            except Exception as exc:  # processors still skip it: its task events are ignored
                log.warning("announcing cancellation failed: %s", exc, extra={"job_id": job_id})
            await self.hub.announce([job_id])
            self.outbox.wake()  # its tasks no longer hold its user's dispatch slots
        return job

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        return job_to_proto(await self._cancel(user, request.job_id, context))

    async def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        # Purged even when it was cancelled before: a redelivery left in the queue must not run.
        job = await self._cancel(user, request.job_id, context, purge=True)
        try:
            deleted = await self.remove_job(user, job.job_id)
        except grpc.aio.AioRpcError:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "storage is unavailable; the job was not deleted, try again"
            )
        return jobs_pb2.DeleteJobResponse(objects_deleted=deleted)

    async def remove_job(self, user: str, job_id: str) -> int:
        """Every object of the job's folder, then its rows (DeleteJob, retention); returns the
        objects removed. A storage error leaves the rows, so that the removal can simply be retried."""
        prefix = job_prefix(user, job_id)
        try:
            deleted = await self.storage.delete_prefix(prefix)
        except grpc.aio.AioRpcError as exc:
            log.warning("DeletePrefix %s failed: %s", prefix, exc.code(), extra={"job_id": job_id})
            raise
        await self.repo.delete_job(user, job_id)
        await self.hub.announce([job_id])
        return deleted

    # --- per-user limits ---

    async def _refuse(self, exc: LimitExceededError, context: grpc.aio.ServicerContext) -> None:
        context.set_trailing_metadata(limit_trailer(exc.proto(self.limits)))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.detail)

    async def AdmitSubmission(
        self, request: jobs_pb2.AdmitSubmissionRequest, context: grpc.aio.ServicerContext
    ):
        user = await self._user(request.user_id, context)
        try:
            usage = await self.repo.admit(user, self.limits)
        except LimitExceededError as exc:
            await self._refuse(exc, context)
        return jobs_pb2.Admission(
            usage=usage.proto(self.limits), remaining_bytes=remaining_bytes(usage, self.limits)
        )

    async def GetUsage(self, request: jobs_pb2.GetUsageRequest, context: grpc.aio.ServicerContext):
        user = await self._user(request.user_id, context)
        return (await self.repo.usage(user, self.limits)).proto(self.limits)

    # --- streaming ---

    async def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Job]:
        user = await self._user(request.user_id, context)
        # Subscribe before the first read so no change between the two is missed.
        watcher = self.hub.subscribe(request.job_id)
        try:
            msg = job_to_proto(await self._job(user, request.job_id, context))
            last: Rank | None = None
            while True:
                rank = job_rank(msg)
                # Every change raises the rank: an equal one is a repeat, a lower one a snapshot
                # that a database read already overtook.
                if last is None or rank > last:
                    yield msg
                    last = rank
                if msg.status in TERMINAL:
                    return
                snapshot = await watcher.next(WATCH_RECHECK_SECONDS)
                if snapshot is not None:  # committed by this process: no need to read it back
                    msg = snapshot
                    continue
                found = await self.repo.get_job(user, request.job_id)
                if found is None:  # deleted while watched
                    await context.abort(grpc.StatusCode.NOT_FOUND, JOB_NOT_FOUND)
                msg = job_to_proto(found)  # type: ignore[arg-type]
        finally:
            self.hub.unsubscribe(request.job_id, watcher)
