"""All configuration, read from RADIOLOGY_* environment variables (one class for every service).

Each service reads only the fields it needs; keeping them together means one place lists every knob.
"""

from __future__ import annotations

import os
from functools import lru_cache
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
    # permissions; empty means connect without authentication, as `make run` does).
    nats_user: str = ""  # user name, sent with nats_password
    nats_password: str = ""  # password of nats_user
    nats_creds_file: str = ""  # path of a .creds file (JWT + NKey seed); used instead of user/password
    # Deadline for internal gRPC calls.
    rpc_timeout_seconds: float = 10.0
    # Seconds a service waits for in-flight work on SIGTERM.
    shutdown_grace_seconds: float = 20.0

    # --- jobs ---
    database_url: str = ""  # default: sqlite+aiosqlite:///{data_dir}/jobs.db
    outbox_interval_seconds: float = 5.0
    # Jobs: how often to look for stored folders no job owns (0: never), and how old their newest
    # object must be (longer than any upload) before they are removed.
    janitor_interval_seconds: float = 3600.0
    orphan_grace_seconds: float = 24 * 3600.0

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
    ack_wait_seconds: float = 30.0
    max_deliver: int = 5
    retry_backoff_seconds: float = 1.0

    # --- gateway ---
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # How the gateway learns who calls: "header" (X-User-ID) is the only mode so far; another value
    # stops the gateway at start rather than silently meaning something else.
    auth: Literal["header"] = "header"
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = ["http://localhost:3000"]
    signing_secret: str = ""  # HMAC key for file URLs; default: generated once under data_dir
    url_ttl_seconds: int = 3600
    max_file_bytes: int = 2 * 1024**3 + 64 * 1024**2
    max_files_per_job: int = 100
    max_job_bytes: int = 4 * 1024**3
    # An upload that sends nothing for this long is refused (408) and everything it stored removed.
    upload_idle_timeout_seconds: float = 60.0
    web_dir: str = "web/dist"

    def model_post_init(self, _ctx: object) -> None:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir}/jobs.db"
        if not self.storage_url:
            self.storage_url = f"file://{self.data_dir}/objects"

    @property
    def task_concurrency(self) -> int:
        return self.concurrency or 2 * max(1, self.workers)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def listen_port(addr: str) -> int:
    """Port of a "host:port" address."""
    return int(addr.rsplit(":", 1)[1])
