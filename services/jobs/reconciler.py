"""The reconciler: no task stays PENDING or RUNNING for ever because a message was lost.

Each pass (every RADIOLOGY_RECONCILE_INTERVAL_SECONDS, run by periodic.Periodic) first re-creates
what NATS lost (a deleted stream, the jobs service's own durable consumer, the processors' durable
consumer, which only the jobs service may create: services/common/nats_auth.py), then looks at the
published, unfinished tasks that had neither an event nor a publish for
RADIOLOGY_TASK_STALL_SECONDS:

- past its deadline (RADIOLOGY_TASK_DEADLINE_SECONDS since its first publish): FAILED with a
  clear message (an outage that outlived the deadline, a task nothing could process);
- its TaskMessage still in the task stream (queued behind others, or held by a processor that
  runs it or will get it back after ack_wait): left alone;
- an event of it still waiting in the events stream: left alone (it is about to be applied);
- otherwise its message is gone (a purged or lost stream, a message lost any other way): it is
  published again, under a fresh Nats-Msg-Id so that JetStream's duplicate window cannot drop it
  (the same id from every jobs replica: publisher.republish_id).

Why a republish cannot run a finished task twice: a processor publishes a task's terminal event
before it acks the task's message, and the jobs service acks an event only after committing it.
So when the message is gone and no event waits, the task re-read from the database afterwards
shows every event the processor sent; it is republished only if that still says unfinished.
Processors also run one task id at most once at a time (services/processor/worker.py).

A task therefore waits at most stall time + one interval after its message is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nats.js import JetStreamContext

from services.common import messaging
from services.common.deadlines import deadline_error
from services.common.status import TERMINAL_NAMES
from services.jobs.convert import job_to_proto
from services.jobs.events import EventConsumer
from services.jobs.models import JobState, TaskState, utcnow
from services.jobs.publisher import TaskPublisher
from services.jobs.repository import Repository
from services.jobs.watch import WatchHub

log = logging.getLogger(__name__)

PAGE = 500


@dataclass
class Pass:
    """What one pass did (for logs and tests)."""

    republished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    still_queued: int = 0
    events_waiting: int = 0
    recreated: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self, *, repo: Repository, js: JetStreamContext, publisher: TaskPublisher, hub: WatchHub,
        consumer: EventConsumer, stall_seconds: float, deadline_seconds: float,
        task_ack_wait: float, task_max_deliver: int, on_finished: Callable[[], None] | None = None,
        stream_replicas: int = 1,
    ) -> None:
        self.repo = repo
        self.js = js
        self.publisher = publisher
        self.hub = hub
        self.consumer = consumer
        self.stall = timedelta(seconds=stall_seconds)
        self.deadline_seconds = deadline_seconds
        self.task_ack_wait = task_ack_wait  # of the processors' durable, when it is re-created
        self.task_max_deliver = task_max_deliver
        self.on_finished = on_finished
        self.stream_replicas = stream_replicas
        self.last: Pass | None = None

    async def run_once(self) -> Pass:
        done = Pass()
        await self._heal_nats(done)
        now = utcnow()
        cursor = None
        while True:  # every stalled task, a page at a time (queued ones stay stalled for long)
            page, cursor = await self.repo.stalled_tasks(now - self.stall, PAGE, cursor)
            await self._reconcile(page, now, done)
            if cursor is None:
                break
        if done.republished:
            log.warning("republished %d task(s) whose message was lost", len(done.republished))
        self.last = done
        return done

    async def _reconcile(self, stalled: list[tuple[JobState, TaskState]], now: datetime,
                         done: Pass) -> None:
        deadline = timedelta(seconds=self.deadline_seconds)
        late = {task.task_id for job, task in stalled
                if now - (task.dispatched_at or job.created_at) > deadline}
        if late:
            await self._fail(sorted(late))
            done.failed.extend(late)
        lost: list[tuple[JobState, TaskState]] = []
        for job, task in stalled:
            if task.task_id in late:
                continue
            if await messaging.task_queued(self.js, job.task_type, job.job_id, task.task_id):
                done.still_queued += 1
                continue
            if await messaging.events_pending(self.js, task.task_id):
                done.events_waiting += 1
                continue
            fresh = await self.repo.get_task_state(task.task_id)
            if fresh is None or fresh.status in TERMINAL_NAMES or fresh.updated_at != task.updated_at:
                continue  # an event arrived meanwhile
            lost.append((job, task))
        if lost:
            published = await self.publisher.publish(lost, again=True)
            await self.repo.mark_published(published)
            done.republished.extend(published)

    async def _heal_nats(self, done: Pass) -> None:
        missing = await messaging.missing_streams(self.js)
        if missing:
            log.warning("stream(s) %s missing: re-creating", ", ".join(missing))
            await messaging.ensure_streams(self.js, self.stream_replicas)
            done.recreated.extend(missing)
        if not await messaging.consumer_exists(self.js, messaging.EVENTS_STREAM, messaging.JOBS_DURABLE):
            log.warning("consumer %s missing: re-creating", messaging.JOBS_DURABLE)
            await self.consumer.ensure_consumer()
            done.recreated.append(messaging.JOBS_DURABLE)
        if not await messaging.consumer_exists(self.js, messaging.TASKS_STREAM, messaging.PROCESSOR_DURABLE):
            # Processors wait (not ready) until it is back; it delivers what queued meanwhile.
            log.warning("consumer %s missing: re-creating", messaging.PROCESSOR_DURABLE)
            await messaging.ensure_task_consumer(self.js, ack_wait=self.task_ack_wait,
                                                 max_deliver=self.task_max_deliver)
            done.recreated.append(messaging.PROCESSOR_DURABLE)

    async def _fail(self, task_ids: list[str]) -> None:
        result = await self.repo.fail_tasks(task_ids, deadline_error(self.deadline_seconds))
        if result.applied:
            log.warning("failed %d task(s) past their deadline", result.applied)
            if self.on_finished is not None:
                self.on_finished()
            snapshots = [job_to_proto(job) for job in result.jobs if self.hub.watched(job.job_id)]
            await self.hub.publish(result.job_ids, snapshots)


async def problems(js: JetStreamContext) -> str | None:
    """For readiness: the streams or the jobs service's consumer that are missing (the reconciler
    re-creates them)."""
    missing = await messaging.missing_streams(js)
    if not missing and not await messaging.consumer_exists(
            js, messaging.EVENTS_STREAM, messaging.JOBS_DURABLE):
        missing.append(f"consumer {messaging.JOBS_DURABLE}")
    return f"missing on NATS: {', '.join(missing)}" if missing else None
