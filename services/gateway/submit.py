"""Submitting a job (POST /jobs) as one workflow: the upload is streamed into storage, the
operation and params are checked, the job is created; on any failure before the job exists,
nothing of the request stays stored (removed at once, or retried in the background while storage
is down)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from python_multipart.multipart import parse_options_header

from services.common import logging as log_ctx
from services.common.config import Settings
from services.common.gen.radiology.v1 import common_pb2, jobs_pb2
from services.gateway.catalogue import Catalogue
from services.gateway.clients import Backends
from services.gateway.errors import EXPECTED_MULTIPART, JOB_TOO_LARGE, NO_FILES, SERVICE_UNAVAILABLE, ApiError
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


class Submissions:
    """Creates jobs from uploads; owns the background removals of refused uploads."""

    def __init__(self, backends: Backends, catalogue: Catalogue, settings: Settings) -> None:
        self._backends = backends
        self._catalogue = catalogue
        self._settings = settings
        self._cleanups: set[asyncio.Task[None]] = set()

    async def submit(
        self, user_id: str, content_type: str, content_length: str | None, body: BodyStream
    ) -> common_pb2.Job:
        """The new job (PENDING) from a multipart/form-data body; ApiError when refused."""
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
        created = False
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
            await add_series(self._backends.processor, inputs)  # a ZIP's series: one task each
            job = await self._create(job_id, user_id, task_type, params, inputs)
            created = True
        finally:
            if not created:
                receiver.abort()
                if receiver.touched_storage:
                    await self._remove(receiver.prefix)
        log.info("job created with %d files", len(job.tasks))
        return job

    async def _create(
        self, job_id: str, user_id: str, task_type: str, params: dict[str, Any],
        inputs: list[jobs_pb2.JobInput],
    ) -> common_pb2.Job:
        jobs = self._backends.jobs
        try:
            return await jobs.create_job(
                job_id=job_id, user_id=user_id, task_type=task_type, params=params, inputs=inputs
            )
        except ApiError as exc:
            if exc.error is SERVICE_UNAVAILABLE:
                # The job may exist anyway; remove it so its inputs do not dangle half-owned.
                try:
                    await jobs.delete_job(user_id, job_id)
                except ApiError:
                    pass
            raise

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
