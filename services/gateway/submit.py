"""Submitting a job (POST /jobs) as one workflow: the upload is streamed into storage, the
operation and params are checked, the job is created; on any failure before the job exists,
nothing of the request stays stored (removed at once, or retried in the background while storage
is down). When CreateJob fails in a way that leaves its outcome unknown, the jobs service is asked
before anything is removed: a job that exists never loses its files. An Idempotency-Key makes a
retry return the job of the first attempt instead of creating another."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from python_multipart.multipart import parse_options_header

from services.common import logging as log_ctx
from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2
from services.gateway.catalogue import Catalogue
from services.gateway.clients import Backends
from services.gateway.errors import (
    EXPECTED_MULTIPART,
    JOB_TOO_LARGE,
    NO_FILES,
    NOT_FOUND,
    OUTCOME_UNKNOWN,
    SERVICE_UNAVAILABLE,
    ApiError,
)
from services.gateway.framing import BodyStream
from services.gateway.series import add_series
from services.gateway.text import ascii_digits
from services.gateway.uploads import UploadReceiver, quota_exceeded

log = logging.getLogger(__name__)

DEFAULT_TASK_TYPE = "blur"
# Room for multipart framing (boundaries and part headers) on top of the job's file bytes.
MULTIPART_OVERHEAD = 64 * 1024
# A refused upload's objects must not stay behind when storage is briefly unreachable.
CLEANUP_RETRY_SECONDS = 600.0


def _boundary(content_type: str) -> bytes:
    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(EXPECTED_MULTIPART, "Send the files as multipart/form-data (field 'files').")
    return boundary


def _declared(content_length: str | None) -> int:
    return int(content_length) if content_length and ascii_digits(content_length) else 0


def _check_content_length(content_length: str | None, max_job_bytes: int) -> None:
    if _declared(content_length) > max_job_bytes + MULTIPART_OVERHEAD:
        raise ApiError(JOB_TOO_LARGE, f"The upload exceeds the limit of {max_job_bytes} bytes per job.")


def _check_quota(content_length: str | None, remaining: int) -> None:
    if remaining >= 0 and _declared(content_length) > remaining + MULTIPART_OVERHEAD:
        raise quota_exceeded(remaining)


@dataclass(frozen=True)
class Submitted:
    job: common_pb2.Job
    replayed: bool  # the job an earlier request with the same Idempotency-Key created


class Submissions:
    """Creates jobs from uploads; owns the background removals of refused uploads."""

    def __init__(self, backends: Backends, catalogue: Catalogue, settings: Settings) -> None:
        self._backends = backends
        self._catalogue = catalogue
        self._settings = settings
        self._cleanups: set[asyncio.Task[None]] = set()

    async def submit(
        self, user_id: str, content_type: str, content_length: str | None, body: BodyStream,
        idempotency_key: str = "",
    ) -> Submitted:
        """The new job (PENDING) from a multipart/form-data body, or the job this user already
        created with `idempotency_key` (replayed, nothing stored); ApiError when refused."""
        if idempotency_key:
            earlier = await self._by_key(user_id, idempotency_key)
            if earlier is not None:
                log.info("idempotency key already used by job %s: replayed", earlier.job_id)
                return Submitted(earlier, replayed=True)
        boundary = _boundary(content_type)
        _check_content_length(content_length, self._settings.max_job_bytes)
        # The user's rate and quotas, before a byte of the upload is stored.
        remaining = (await self._backends.jobs.admit_submission(user_id)).remaining_bytes
        _check_quota(content_length, remaining)
        job_id = str(uuid.uuid4())
        log_ctx.job_id.set(job_id)
        receiver = UploadReceiver(
            quota_bytes=remaining,
            storage=self._backends.storage,
            settings=self._settings,
            user_id=user_id,
            job_id=job_id,
            boundary=boundary,
            on_task_type=self._catalogue.require,  # refuses an unknown operation before storing files
        )
        # Set while the job may exist: its files must then stay (the janitor removes them later if
        # it does not). Left set when the request is cancelled in the middle of CreateJob.
        may_exist = False
        submitted: Submitted | None = None
        try:
            form = await receiver.receive(body)
            await body.finish(self._settings.upload_idle_timeout_seconds)  # nothing left unread
            if not form.files:
                raise ApiError(NO_FILES)
            task_type = form.task_type or DEFAULT_TASK_TYPE
            await self._catalogue.require(task_type)
            await self._catalogue.check_inputs(task_type, [(f.filename, f.format) for f in form.files])
            params = await self._catalogue.validate(task_type, form.params)
            inputs = [
                jobs_pb2.JobInput(filename=f.filename, key=f.key, format=f.format, size=f.size)
                for f in form.files
            ]
            # a 2D DICOM for an operation on volumes (or the reverse) is refused now, not as a task
            inspected = await self._catalogue.check_kinds(task_type, inputs)
            await add_series(self._backends.processor, inputs, inspected)  # a ZIP's series: one task each
            may_exist = True
            try:
                submitted = await self._create(job_id, user_id, task_type, params, inputs, idempotency_key)
            except ApiError as exc:
                may_exist = exc.error is OUTCOME_UNKNOWN
                raise
        finally:
            # Kept: the job exists and owns them, or may exist. Otherwise (refused, or another job
            # of the same key answered) nothing of this upload stays.
            owned = submitted is not None and submitted.job.job_id == job_id
            if not (owned or may_exist and submitted is None):
                receiver.abort()
                if receiver.touched_storage:
                    await self._remove(receiver.prefix)
            elif not owned:
                log.warning("job %s may exist: its files are kept (the janitor removes them if not)", job_id)
        assert submitted is not None
        if submitted.replayed:
            log.info("idempotency key taken by job %s meanwhile: replayed", submitted.job.job_id)
        else:
            log.info("job created with %d files", len(submitted.job.tasks))
        return submitted

    async def _by_key(self, user_id: str, key: str) -> common_pb2.Job | None:
        try:
            return await self._backends.jobs.get_job_by_key(user_id, key)
        except ApiError as exc:
            if exc.error is NOT_FOUND:
                return None
            raise

    async def _create(
        self, job_id: str, user_id: str, task_type: str, params: dict[str, Any],
        inputs: list[jobs_pb2.JobInput], key: str,
    ) -> Submitted:
        try:
            job = await self._backends.jobs.create_job(
                job_id=job_id, user_id=user_id, task_type=task_type, params=params, inputs=inputs,
                idempotency_key=key,
            )
        except ApiError as exc:
            if exc.error is not SERVICE_UNAVAILABLE:
                raise  # a definite answer: nothing was recorded
            # Unreachable or past its deadline: the job may have been committed all the same.
            job = await self._settle(user_id, job_id, key)
        # With a key the user already used, the service answers with that key's job.
        return Submitted(job, replayed=job.job_id != job_id)

    async def _settle(self, user_id: str, job_id: str, key: str) -> common_pb2.Job:
        """The job after a CreateJob whose outcome is unknown: asked by id (and by key) for a few
        seconds; ApiError outcome_unknown when no answer settles it."""
        jobs = self._backends.jobs
        deadline = time.monotonic() + self._settings.create_lookup_seconds
        delay = 0.1
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await jobs.get_job(user_id, job_id, timeout=max(0.2, min(remaining, 2.0)))
            except ApiError as exc:
                if exc.error is NOT_FOUND and key:
                    # Another request with this key won: this one can never be recorded now.
                    winner = await self._by_key_quietly(user_id, key)
                    if winner is not None:
                        return winner
                if exc.error is not SERVICE_UNAVAILABLE:
                    # Not final, even NOT_FOUND (a CreateJob past its deadline may still commit):
                    # the files stay, and a retry with the same key settles it.
                    break
            if time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        hint = ("Retry with the same Idempotency-Key header: it returns the job if it was created."
                if key else "GET /jobs shows it if it was created; send an Idempotency-Key header so "
                "that a retry can never create a second job.")
        raise ApiError(
            OUTCOME_UNKNOWN, f"The jobs service failed while creating the job; it may exist. {hint}"
        )

    async def _by_key_quietly(self, user_id: str, key: str) -> common_pb2.Job | None:
        try:
            job = await self._by_key(user_id, key)
        except ApiError:
            return None
        return job

    async def _remove(self, prefix: str) -> None:
        """Remove everything stored under the job's prefix; shielded so that it still completes when
        the request is cancelled (the client went away), and retried in the background if storage
        fails."""
        try:
            await asyncio.shield(self._backends.storage.delete_prefix(prefix))
        except Exception as exc:
            log.warning("could not remove %s of a refused upload (%s); retrying later", prefix, exc)
            task = asyncio.get_running_loop().create_task(self._retry_remove(prefix))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _retry_remove(self, prefix: str, delay: float = 0.5) -> None:
        deadline = time.monotonic() + CLEANUP_RETRY_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await self._backends.storage.delete_prefix(prefix)
                log.info("removed %s of a failed upload", prefix)
                return
            except Exception:
                delay = min(delay * 2, 30.0)
        log.error("gave up removing %s: objects of a refused upload remain in storage", prefix)

    async def close(self) -> None:
        """Stop the background removals (at shutdown); the jobs service's janitor removes what they
        leave once it is older than its grace period."""
        for task in list(self._cleanups):
            task.cancel()
        if self._cleanups:
            log.warning("%d removals of refused uploads left to the janitor", len(self._cleanups))
            await asyncio.gather(*self._cleanups, return_exceptions=True)
