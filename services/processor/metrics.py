"""The processor's Prometheus metrics (names from the seed: worker_active_tasks,
task_latency_seconds, error_rate, queue_depth)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

ACTIVE = Gauge("worker_active_tasks", "Tasks this processor is working on")
LATENCY = Histogram(
    "task_latency_seconds", "From fetching a task to its final ack", ["task_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PROCESSED = Counter("tasks_processed", "Tasks settled by this processor", ["task_type", "outcome"])
ERRORS = Counter("error_rate", "Tasks that ended FAILED", ["task_type"])
QUEUE_DEPTH = Gauge("queue_depth", "Tasks waiting in JetStream for a processor")

# Outcomes of one delivery of a task message.
SUCCESS, FAILED, RETRIED, CANCELLED, HANDED_BACK, ERROR, DUPLICATE = (
    "success", "failed", "retried", "cancelled", "handed_back", "error", "duplicate"
)


def settled(task_type: str, outcome: str, seconds: float) -> None:
    """Count one delivery; a task's latency is counted once, when it ends for good."""
    PROCESSED.labels(task_type, outcome).inc()
    if outcome == FAILED:
        ERRORS.labels(task_type).inc()
    if outcome in (SUCCESS, FAILED):
        LATENCY.labels(task_type).observe(seconds)


async def track_queue_depth(
    sub: Callable[[], JetStreamContext.PullSubscription], interval: float,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Keep queue_depth up to date until cancelled or `stopping()` (`sub`: the current
    subscription). The flag too, because a cancellation can be lost in the request's wait_for."""
    while not stopping():
        try:
            QUEUE_DEPTH.set((await sub().consumer_info()).num_pending)
        except Exception as exc:
            log.debug("queue depth unavailable: %s", exc)
        await asyncio.sleep(interval)
