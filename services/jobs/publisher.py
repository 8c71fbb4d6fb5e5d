"""Publishes TaskMessages to JetStream with the task id as Nats-Msg-Id (used by the outbox, so a
repeat is dropped by JetStream's duplicate window, and by the reconciler)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from nats.aio.client import Client as NATS

from services.common import messaging, tracing
from services.common.gen.radiology.v1 import tasks_pb2
from services.common.protobuf import to_struct
from services.jobs.models import JobState, TaskState, utcnow

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 2.0


def task_message(job: JobState, task: TaskState) -> tasks_pb2.TaskMessage:
    return tasks_pb2.TaskMessage(
        task_id=task.task_id,
        job_id=job.job_id,
        user_id=job.user_id,
        task_type=job.task_type,
        params=to_struct(job.params),
        input_key=task.input_key,
        input_file=task.input_file,
        output_stem=task.output_stem,
        series_instance_uid=task.series_uid,
        dispatched_at=(task.dispatched_at or utcnow()).timestamp(),
    )


class TaskPublisher:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def _publish_one(self, job: JobState, task: TaskState, msg_id: str = "") -> str | None:
        headers = tracing.inject({"Nats-Msg-Id": msg_id or task.task_id})
        try:
            await self.js.publish(
                messaging.task_subject(job.task_type, job.job_id, task.task_id),
                task_message(job, task).SerializeToString(),
                timeout=PUBLISH_TIMEOUT_SECONDS,
                headers=dict(headers),
            )
        except Exception as exc:  # any failure leaves the task to the outbox
            log.warning("publishing task %s failed: %s", task.task_id, exc, extra={"job_id": job.job_id})
            return None
        return task.task_id

    async def publish(self, pairs: Sequence[tuple[JobState, TaskState]], *, again: bool = False) -> list[str]:
        """Publish every task; returns the ids JetStream acknowledged. `again` (the reconciler: the
        first message was lost) gives the message a fresh Nats-Msg-Id, so that JetStream's
        duplicate window does not drop it as a repeat of the lost one."""
        if not pairs or not self.nc.is_connected:
            # While NATS reconnects a publish would sit in the client's buffer; the outbox retries.
            return []
        done = await asyncio.gather(*(
            self._publish_one(job, task, republish_id(task) if again else task.task_id)
            for job, task in pairs))
        return [task_id for task_id in done if task_id]


def republish_id(task: TaskState) -> str:
    """The Nats-Msg-Id of a task published again: new for each lost publish, and the same for two
    jobs replicas that find the same lost publish (so JetStream keeps one of their messages)."""
    at = task.published_at.timestamp() if task.published_at is not None else time.time()
    return f"{task.task_id}:r{at:.6f}"
