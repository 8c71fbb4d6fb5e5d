"""NATS JetStream names and helpers shared by the jobs service and the processors.

Streams
- RADIOLOGY_TASKS   subjects radiology.tasks.<task_type>.<job_id>   work queue; one durable pull
                    consumer "processor" shared by every processor replica. The job id in the
                    subject lets a cancel purge the job's queued tasks (purge_job_tasks).
- RADIOLOGY_EVENTS  subjects radiology.events.<task_id>    work queue; durable pull consumer "jobs".
Core subjects (no persistence, fan-out)
- radiology.job-changed.<job_id>   the jobs service announces a committed change (for WatchJob).
- radiology.job-cancelled          the jobs service announces cancelled job ids to processors.
"""

from __future__ import annotations

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
from nats.js.errors import BadRequestError

from services.common.config import get_settings

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


def task_subject(task_type: str, job_id: str) -> str:
    return f"{TASKS_SUBJECT}.{task_type}.{job_id}"


async def purge_job_tasks(js: JetStreamContext, job_id: str) -> None:
    """Remove a job's still-queued task messages, so no processor (even one that starts later and
    never heard the cancel notice) picks them up."""
    await js.purge_stream(TASKS_STREAM, subject=f"{TASKS_SUBJECT}.*.{job_id}")


def event_subject(task_id: str) -> str:
    return f"{EVENTS_SUBJECT}.{task_id}"


async def connect(url: str, name: str, *, user: str | None = None, password: str | None = None,
                  creds_file: str | None = None) -> NATS:
    """Connect, retrying for ever in the background after the first success.

    The service's own NATS user authenticates: `creds_file` (a NATS .creds file) or `user` and
    `password`; each one not given comes from RADIOLOGY_NATS_CREDS_FILE, _NATS_USER, _NATS_PASSWORD.
    All empty: no authentication (a local nats-server, as `make run` starts)."""
    settings = get_settings()
    creds_file = settings.nats_creds_file if creds_file is None else creds_file
    user = settings.nats_user if user is None else user
    password = settings.nats_password if password is None else password
    auth: dict[str, str] = {}
    if creds_file:
        auth["user_credentials"] = creds_file
    elif user:
        auth.update(user=user, password=password)
    return await nats.connect(
        url,
        name=name,
        **auth,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        # A server that hangs (rather than closing the socket) is noticed within ~30 s, not minutes.
        ping_interval=10,
        max_outstanding_pings=3,
    )


async def ensure_streams(js: JetStreamContext) -> None:
    """Create (or update) both streams; safe to call from every replica at start."""
    for name, subject in ((TASKS_STREAM, TASKS_SUBJECT), (EVENTS_STREAM, EVENTS_SUBJECT)):
        config = StreamConfig(
            name=name,
            subjects=[f"{subject}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


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
