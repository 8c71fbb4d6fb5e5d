"""All configuration, read from RADIOLOGY_* environment variables (one class for every service).

Each service reads only the fields it needs; keeping them together means one place lists every knob.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADIOLOGY_", extra="ignore")

    # --- shared ---
    log_level: str = "INFO"
    data_dir: str = "var"
    # Address of each gRPC service; a service listens on the port of its own address.
    jobs_addr: str = "127.0.0.1:50051"
    storage_addr: str = "127.0.0.1:50052"
    processor_addr: str = "127.0.0.1:50053"
    listen_host: str = "127.0.0.1"
    # Port for this process's Prometheus /metrics (gRPC services); 0 disables it.
    metrics_port: int = 0
    nats_url: str = "nats://127.0.0.1:4222"
    # NATS credentials of this service (each service that uses NATS has its own user and subject
    # permissions, services/common/nats_auth.py; empty means connect without authentication).
    nats_user: str = ""  # user name, sent with nats_password
    nats_password: str = ""  # password of nats_user
    nats_creds_file: str = ""  # path of a .creds file (JWT + NKey seed); used instead of user/password
    # Deadline for internal gRPC calls.
    rpc_timeout_seconds: float = 10.0
    # How gRPC clients use a peer's addresses: "pick_first" (one connection) or "round_robin"
    # (every address of the name; Kubernetes headless Services). See common/grpc_client.py.
    grpc_load_balancing: Literal["pick_first", "round_robin"] = "pick_first"
    # Seconds a service waits for in-flight work on SIGTERM.
    shutdown_grace_seconds: float = 20.0

    # --- jobs ---
    database_url: str = ""  # default: sqlite+aiosqlite:///{data_dir}/jobs.db
    # Jobs: copies of each JetStream stream (and of its consumers) on a NATS cluster. 1 on a single
    # server (make run, compose); 3 on Kubernetes' 3-server cluster, so that a server restarting or
    # lost takes no queued task or event with it. Applied to existing streams at the next start.
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    outbox_interval_seconds: float = 5.0
    # Jobs: how often to look for stored folders no job owns (0: never), and how old their newest
    # object must be (longer than any upload) before they are removed.
    janitor_interval_seconds: float = 3600.0
    orphan_grace_seconds: float = 24 * 3600.0
    # Jobs: retention. Finished jobs (SUCCESS, FAILED, CANCELLED) whose last change is older than
    # this many days are deleted with all their files, like DELETE /jobs/{id}; 0: kept forever.
    # Fractions are allowed (tests use a few seconds' worth). Checked every retention_interval_seconds.
    retention_days: float = Field(default=0.0, ge=0)
    retention_interval_seconds: float = Field(default=600.0, gt=0)
    # Jobs: per-user limits (0: none), shared by every replica through the database. Submissions
    # are a token bucket: `rate_limit_per_minute` tokens a minute, at most `rate_limit_burst` saved.
    rate_limit_per_minute: float = 60.0
    rate_limit_burst: int = 30
    max_active_jobs_per_user: int = 100  # jobs PENDING or RUNNING
    max_stored_bytes_per_user: int = 20 * 1024**3  # inputs and outputs
    # Jobs: fair share. A user's tasks are published to the task stream only while fewer than this
    # many of theirs are published and unfinished; the rest wait in the database (0: no cap).
    max_dispatched_tasks_per_user: int = 8
    # Jobs: the reconciler (services/jobs/reconciler.py) runs every `reconcile_interval_seconds`;
    # a PENDING or RUNNING task without an event for `task_stall_seconds` whose message is no
    # longer in the task stream is published again.
    reconcile_interval_seconds: float = 30.0
    task_stall_seconds: float = 300.0

    # --- jobs and processor ---
    # A task unfinished this long after its first publish fails ("deadline exceeded"): the only
    # way an outage (storage, NATS, database) can fail a task. Transient errors otherwise wait.
    task_deadline_seconds: float = 6 * 3600.0
    # The processors' durable consumer on the task stream, which the jobs service alone creates and
    # updates (services/common/messaging.ensure_task_consumer): a task message held this long without
    # an ack or keep-alive is redelivered. Processors send keep-alives every third of the consumer's
    # own ack_wait (read from it), so this setting takes effect through the jobs service.
    ack_wait_seconds: float = 30.0
    # Deliveries of a task message before JetStream gives up on it; -1 (the default): no limit, so
    # that the task deadline (not a count of retries during an outage) decides when a task fails.
    max_deliver: int = -1

    # --- storage ---
    storage_url: str = ""  # default: file://{data_dir}/objects ; or s3://host:port/bucket
    # Local folder only: fsync each object before it becomes visible (survives a power cut). Costs
    # about 1 ms of disk wait per object (off the event loop); false trades that durability away.
    storage_fsync: bool = True
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    s3_secure: bool = False

    # --- processor ---
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1)  # process pool size
    concurrency: int = 0  # tasks in flight per replica; 0 = 2 x workers
    # After a transient failure a task is handed back with a delay doubling from
    # `retry_backoff_seconds` up to `retry_backoff_max_seconds`.
    retry_backoff_seconds: float = 1.0
    retry_backoff_max_seconds: float = 30.0
    # While storage is unreachable the processor pulls no new task; it probes storage's health
    # this often and resumes at the first answer.
    storage_probe_seconds: float = 2.0
    # Memory one task may use in a worker process, estimated from the input's header before
    # decoding; 0: a share of the machine's (or container's) memory per worker (see task_memory_bytes).
    task_memory_mb: int = 0
    # Key of the anonymize operation's UID replacement: new UID = HMAC-SHA256 of the job id and the
    # original UID under this secret, so nobody without it can test a guessed original UID against
    # an output. The same long random value (at least 32 characters) on every processor replica, as
    # one job's tasks run on several; changing it changes the UIDs later jobs get. Empty: anonymize
    # tasks fail, naming this setting (make run generates one under data_dir; compose reads it from
    # .env; Kubernetes from the radiology-processor Secret).
    anonymize_secret: str = ""

    # --- gateway ---
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # How the gateway learns who calls: "header" (X-User-ID, trusted as sent) or "jwt" (a verified
    # Authorization: Bearer token; X-User-ID ignored). Another value stops the gateway at start.
    auth: Literal["header", "jwt"] = "header"
    # jwt mode: exactly one key source. HS256 with a shared secret (at least 32 bytes), or the
    # public key(s) of an identity provider: a PEM file, or its JWKS URL (keys chosen by `kid`).
    jwt_secret: str = ""
    jwt_public_key: str = ""  # path of a PEM file (RSA or EC public key)
    jwt_jwks_url: str = ""
    # Accepted algorithms; empty: HS256 for a secret, the PEM key's own (RS256, ES256, ...), or
    # RS256,ES256 for a JWKS. "none" and algorithms that do not fit the key source are refused.
    jwt_algorithms: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = []
    jwt_audience: str = ""  # checked when set
    jwt_issuer: str = ""  # checked when set
    jwt_user_claim: str = "sub"
    jwt_leeway_seconds: float = 30.0  # clock skew allowed on exp / nbf / iat
    jwt_jwks_cache_seconds: float = 300.0  # JWKS kept this long; an unknown kid refetches sooner
    jwt_jwks_min_refetch_seconds: float = 10.0  # at most one JWKS fetch this often
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = ["http://localhost:3000"]
    signing_secret: str = ""  # HMAC key for file URLs; default: generated once under data_dir
    url_ttl_seconds: int = 3600
    max_file_bytes: int = 2 * 1024**3 + 64 * 1024**2
    max_files_per_job: int = 100
    max_job_bytes: int = 4 * 1024**3
    # An upload that sends nothing for this long is refused (408) and everything it stored removed.
    upload_idle_timeout_seconds: float = 60.0
    # Deadline of the processor's catalogue calls (ListOperations, ValidateParams) on a submission:
    # short, so that a stuck processor never holds an upload (known params are accepted meanwhile).
    validate_timeout_seconds: float = 1.5
    # CreateJob's outcome unknown (the call failed after it may have committed): how long the
    # gateway keeps asking the jobs service whether the job exists before it answers 503.
    create_lookup_seconds: float = 5.0
    web_dir: str = "web/dist"

    def model_post_init(self, _ctx: object) -> None:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir}/jobs.db"
        if not self.storage_url:
            self.storage_url = f"file://{self.data_dir}/objects"

    @property
    def task_concurrency(self) -> int:
        return self.concurrency or 2 * max(1, self.workers)

    @property
    def task_memory_bytes(self) -> int:
        """RADIOLOGY_TASK_MEMORY_MB, or by default 3/4 of the memory this process may use (the
        cgroup limit of a container, else the machine's) divided among the pool's workers."""
        if self.task_memory_mb > 0:
            return self.task_memory_mb * 1024**2
        return int(available_memory_bytes() * 0.75) // max(1, self.workers)


def available_memory_bytes() -> int:
    """The memory limit of this container (cgroup v2 or v1), else the machine's physical memory."""
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's huge number: no limit
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def listen_port(addr: str) -> int:
    """Port of a "host:port" address."""
    return int(addr.rsplit(":", 1)[1])
