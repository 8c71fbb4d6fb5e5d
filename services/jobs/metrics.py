"""Prometheus metrics of the jobs service (served on RADIOLOGY_METRICS_PORT by run_server)."""

from prometheus_client import Counter, Gauge, Histogram

JOBS_CREATED = Counter("jobs_created_total", "Jobs created")
TASK_EVENTS_APPLIED = Counter("task_events_applied_total", "Task events that changed a task")
EVENT_BATCH_SIZE = Histogram(
    "event_batch_size", "Task events per applied batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
OUTBOX_UNPUBLISHED = Gauge(
    "outbox_unpublished",
    "Pending tasks not yet published to NATS (waiting for their user's share, or NATS down)",
)
