"""NATS JetStream names and helpers shared by the jobs service and the processors.

Streams
- RADIOLOGY_TASKS   subjects radiology.tasks.<task_type>.<job_id>.<task_id>   work queue; one durable
                    pull consumer "processor" shared by every processor replica, created and
                    updated by the jobs service only (ensure_task_consumer). The job id in
                    the subject lets a cancel purge the job's queued tasks (purge_job_tasks); the
                    task id lets the reconciler ask whether a task's message is still queued.
- RADIOLOGY_EVENTS  subjects radiology.events.<task_id>    work queue; durable pull consumer "jobs".
Core subjects (no persistence, fan-out)
- radiology.job-changed.<job_id>   the jobs service announces a committed change (for WatchJob).
- radiology.job-cancelled          the jobs service announces cancelled job ids to processors.
"""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from services.common.config import Settings

log = logging.getLogger(__name__)

TASKS_STREAM = "RADIOLOGY_TASKS"
TASKS_SUBJECT = "radiology.tasks"
EVENTS_STREAM = "RADIOLOGY_EVENTS"
EVENTS_SUBJECT = "radiology.events"
PROCESSOR_DURABLE = "processor"
JOBS_DURABLE = "jobs"
JOB_CHANGED_SUBJECT = "radiology.job-changed"
JOB_CANCELLED_SUBJECT = "radiology.job-cancelled"
DUPLICATE_WINDOW_SECONDS = 120.0


def task_subject(task_type: str, job_id: str, task_id: str) -> str:
    return f"{TASKS_SUBJECT}.{task_type}.{job_id}.{task_id}"


async def purge_job_tasks(js: JetStreamContext, job_id: str) -> None:
    """Remove a job's still-queued task messages, so no processor (even one that starts later and
    never heard the cancel notice) picks them up."""
    await js.purge_stream(TASKS_STREAM, subject=f"{TASKS_SUBJECT}.*.{job_id}.>")


async def task_queued(js: JetStreamContext, task_type: str, job_id: str, task_id: str) -> bool:
    """True while the task's message is in the task stream: queued, or delivered and not yet
    acknowledged (a work-queue stream removes a message when it is acked)."""
    try:
        await js.get_last_msg(TASKS_STREAM, task_subject(task_type, job_id, task_id))
    except NotFoundError:
        return False
    return True


def event_subject(task_id: str) -> str:
    return f"{EVENTS_SUBJECT}.{task_id}"


def inbox_prefix(name: str) -> str:
    """A service's own reply subjects: its NATS user may subscribe to these and no one else's."""
    return f"_INBOX_{name}"


async def connect_service(settings: Settings, name: str) -> NATS:
    """A service's connection, as its own NATS user (RADIOLOGY_NATS_CREDS_FILE, or _NATS_USER and
    _NATS_PASSWORD; all empty: no authentication)."""
    return await connect(settings.nats_url, name, user=settings.nats_user,
                         password=settings.nats_password, creds_file=settings.nats_creds_file)


async def connect(url: str, name: str, *, user: str = "", password: str = "", creds_file: str = "") -> NATS:
    """Connect, retrying for ever in the background after the first success.

    `creds_file` (a NATS .creds file) or `user` and `password` authenticate. Replies arrive on the
    service's own inbox prefix, the only inbox its NATS user may subscribe to
    (services/common/nats_auth.py)."""
    auth: dict[str, str] = {}
    if creds_file:
        auth["user_credentials"] = creds_file
    elif user:
        auth.update(user=user, password=password)
    return await nats.connect(
        url,
        name=name,
        **auth,
        inbox_prefix=inbox_prefix(name),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        # A server that hangs (rather than closing the socket) is noticed within ~30 s, not minutes.
        ping_interval=10,
        max_outstanding_pings=3,
    )


async def events_pending(js: JetStreamContext, task_id: str) -> bool:
    """True while an event of the task waits in the events stream (not yet applied by the jobs
    service, which acks each event after committing it)."""
    try:
        await js.get_last_msg(EVENTS_STREAM, event_subject(task_id))
    except NotFoundError:
        return False
    return True


async def missing_streams(js: JetStreamContext) -> list[str]:
    """The platform's streams that do not exist (deleted by an operator, or a NATS server that lost
    its data)."""
    missing = []
    for name in (TASKS_STREAM, EVENTS_STREAM):
        try:
            await js.stream_info(name)
        except NotFoundError:
            missing.append(name)
    return missing


async def consumer_exists(js: JetStreamContext, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    return True


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create (or update) both streams with `replicas` copies on a NATS cluster (their consumers
    inherit it); safe to call from every replica at start. An update also changes the number of
    copies of a stream that exists (RADIOLOGY_NATS_STREAM_REPLICAS)."""
    for name, subject in ((TASKS_STREAM, TASKS_SUBJECT), (EVENTS_STREAM, EVENTS_SUBJECT)):
        config = StreamConfig(
            name=name,
            subjects=[f"{subject}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


async def wait_for_streams(js: JetStreamContext, poll_seconds: float = 1.0) -> None:
    """Until both streams exist. Processors wait for the jobs service to create them: their NATS user
    may read a stream's info but not create or change a stream."""
    waited = 0
    while True:
        missing = await missing_streams(js)
        if not missing:
            return
        if waited % 10 == 0:
            log.info("waiting for the jobs service to create stream %s", " and ".join(missing))
        waited += 1
        await asyncio.sleep(poll_seconds)


async def wait_for_task_consumer(js: JetStreamContext, poll_seconds: float = 1.0) -> None:
    """Until the processors' durable consumer exists. Processors wait for the jobs service to create
    it: their NATS user may read its info and pull from it, but not create or change it."""
    waited = 0
    while not await consumer_exists(js, TASKS_STREAM, PROCESSOR_DURABLE):
        if waited % 10 == 0:
            log.info("waiting for the jobs service to create consumer %s of stream %s",
                     PROCESSOR_DURABLE, TASKS_STREAM)
        waited += 1
        await asyncio.sleep(poll_seconds)


def task_consumer_config(*, ack_wait: float, max_deliver: int) -> ConsumerConfig:
    """The processors' durable consumer on the task stream: the one definition, applied by the jobs
    service (RADIOLOGY_ACK_WAIT_SECONDS, RADIOLOGY_MAX_DELIVER). The same configuration processors
    used to create themselves, so a deployment's existing durable is kept as it is on upgrade."""
    return consumer_config(PROCESSOR_DURABLE, TASKS_SUBJECT, ack_wait=ack_wait, max_deliver=max_deliver)


async def ensure_task_consumer(js: JetStreamContext, *, ack_wait: float, max_deliver: int) -> None:
    """Create the processors' durable consumer, or update an existing one to this configuration
    (ack_wait and max_deliver are editable; binding alone would silently keep old values). Called by
    the jobs service at start and by its reconciler when the durable is missing."""
    config = task_consumer_config(ack_wait=ack_wait, max_deliver=max_deliver)
    try:
        await js.add_consumer(TASKS_STREAM, config)
    except BadRequestError as exc:  # exists with a setting the server cannot change in place
        log.error("consumer %s of stream %s not updated (%s); delete it with the NATS CLI "
                  "(nats consumer rm %s %s) and the reconciler re-creates it", PROCESSOR_DURABLE,
                  TASKS_STREAM, exc, TASKS_STREAM, PROCESSOR_DURABLE)


def consumer_config(durable: str, subject: str, *, ack_wait: float, max_deliver: int,
                    max_ack_pending: int = 1000) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=f"{subject}.>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
