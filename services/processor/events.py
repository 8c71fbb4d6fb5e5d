"""TaskEvents: how the processor tells the jobs service about a task (JetStream, at least once).

Each event goes to ``radiology.events.<task_id>`` with ``Nats-Msg-Id: <task_id>:<progress>:<status>``,
so a redelivered task's repeated events are dropped by JetStream's duplicate window, and carries
the trace context of the task message.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from nats.js import JetStreamContext

from services.common import messaging, tracing
from services.common.gen.radiology.v1 import common_pb2, tasks_pb2
from services.common.status import TERMINAL, Status, status_name

PUBLISH_TIMEOUT = 5.0
# Log lines kept for tasks whose outcome is not published yet (see TaskEvents.keep_logs).
MAX_KEPT_LOGS = 1024


class Encoded(NamedTuple):
    subject: str
    payload: bytes
    headers: dict[str, str]


def encode(task: tasks_pb2.TaskMessage, status: Status, progress: int, message: str, *,
           error: str = "", result: common_pb2.TaskResult | None = None,
           logs: Sequence[str] = ()) -> Encoded:
    """The event as it goes on the wire, stamped with the time now."""
    event = tasks_pb2.TaskEvent(
        task_id=task.task_id, job_id=task.job_id, status=status, progress=progress,
        message=message, error=error, result=result, emitted_at=time.time(), logs=logs,
    )
    headers = tracing.inject({"Nats-Msg-Id": f"{task.task_id}:{progress}:{status_name(status)}"})
    return Encoded(messaging.event_subject(task.task_id), event.SerializeToString(), dict(headers))


class TaskEvents:
    """Publishes a task's events to JetStream. A terminal event carries the task's log lines: the
    ones given, else those kept for it by `keep_logs` (the pipeline keeps them when an attempt
    raises; whoever then reports the failure publishes them without knowing)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kept: OrderedDict[str, list[str]] = OrderedDict()

    def keep_logs(self, task_id: str, lines: list[str]) -> None:
        """Hold the lines of an attempt that did not finish, for the task's terminal event (the
        latest attempt's replace earlier ones; the oldest are forgotten past MAX_KEPT_LOGS)."""
        self._kept.pop(task_id, None)
        self._kept[task_id] = lines
        while len(self._kept) > MAX_KEPT_LOGS:
            self._kept.popitem(last=False)

    async def publish(self, task: tasks_pb2.TaskMessage, status: Status, progress: int, message: str,
                      *, error: str = "", result: common_pb2.TaskResult | None = None,
                      logs: Sequence[str] | None = None) -> None:
        """Publish and wait for JetStream's ack (raises when it does not come)."""
        if status in TERMINAL:
            kept = self._kept.get(task.task_id)
            logs = logs if logs is not None else kept or ()
        await self._send(encode(task, status, progress, message, error=error, result=result,
                                logs=logs or ()))
        if status in TERMINAL:
            self._kept.pop(task.task_id, None)

    def publish_soon(self, task: tasks_pb2.TaskMessage, status: Status, progress: int,
                     message: str) -> asyncio.Task[None]:
        """Publish without waiting for the ack (await the returned task for that). The event is
        built now (its time is now); tasks start in creation order, so events leave in the order
        they happened."""
        return asyncio.create_task(self._send(encode(task, status, progress, message)))

    async def _send(self, event: Encoded) -> None:
        await self._js.publish(event.subject, event.payload, headers=event.headers, timeout=PUBLISH_TIMEOUT)
