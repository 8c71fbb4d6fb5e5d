"""Per-user limits of the jobs service: the submission token bucket and the quotas, as pure rules
(the SQL that reads usage and locks a user's row is in repository.py).

Every jobs replica reads and writes the same rows, so a limit holds however many gateways and jobs
replicas serve the user. A refusal is LimitExceededError; the servicer sends it as
RESOURCE_EXHAUSTED with a LimitExceeded message (jobs.proto) that names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.config import Settings
from services.common.gen.radiology.v1 import jobs_pb2

# A hint only: when one of the user's jobs finishes is not known.
ACTIVE_JOBS_RETRY_SECONDS = 5.0

RATE = jobs_pb2.LimitExceeded.LIMIT_SUBMISSION_RATE
ACTIVE_JOBS = jobs_pb2.LimitExceeded.LIMIT_ACTIVE_JOBS
STORED_BYTES = jobs_pb2.LimitExceeded.LIMIT_STORED_BYTES


@dataclass(frozen=True)
class UserLimits:
    """0 means no limit."""

    per_minute: float = 0.0
    burst: int = 0
    max_active_jobs: int = 0
    max_stored_bytes: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> UserLimits:
        return cls(
            per_minute=max(0.0, settings.rate_limit_per_minute),
            burst=max(1, settings.rate_limit_burst),
            max_active_jobs=max(0, settings.max_active_jobs_per_user),
            max_stored_bytes=max(0, settings.max_stored_bytes_per_user),
        )

    def proto(self) -> jobs_pb2.UsageLimits:
        return jobs_pb2.UsageLimits(
            submissions_per_minute=int(round(self.per_minute)),
            submission_burst=self.burst if self.per_minute else 0,
            max_active_jobs=self.max_active_jobs, max_stored_bytes=self.max_stored_bytes,
        )


@dataclass
class Usage:
    user_id: str
    active_jobs: int
    stored_bytes: int
    tokens: float  # in the bucket now (after refill)

    def proto(self, limits: UserLimits) -> jobs_pb2.Usage:
        return jobs_pb2.Usage(
            user_id=self.user_id, active_jobs=self.active_jobs, stored_bytes=self.stored_bytes,
            limits=limits.proto(), submissions_available=int(self.tokens) if limits.per_minute else -1,
        )


class LimitExceededError(Exception):
    def __init__(self, limit: int, usage: Usage, retry_after: float = 0.0, detail: str = "") -> None:
        super().__init__(detail)
        self.limit = limit
        self.usage = usage
        self.retry_after = retry_after
        self.detail = detail

    def proto(self, limits: UserLimits) -> jobs_pb2.LimitExceeded:
        return jobs_pb2.LimitExceeded(
            limit=self.limit, retry_after_seconds=self.retry_after, usage=self.usage.proto(limits)
        )


def refill(tokens: float, since: datetime, now: datetime, limits: UserLimits) -> float:
    """The bucket's tokens at `now`: `per_minute` more every minute since `since`, at most `burst`
    (a clock that went backwards adds nothing)."""
    elapsed = max(0.0, (now - since).total_seconds())
    return min(float(limits.burst), tokens + elapsed * limits.per_minute / 60.0)


def seconds_to_next_token(tokens: float, limits: UserLimits) -> float:
    return max(0.0, (1.0 - tokens) * 60.0 / limits.per_minute)


def check_rate(usage: Usage, limits: UserLimits) -> None:
    if limits.per_minute and usage.tokens < 1.0:
        wait = seconds_to_next_token(usage.tokens, limits)
        raise LimitExceededError(
            RATE, usage, wait,
            f"too many submissions: at most {limits.per_minute:g} a minute (bursts of {limits.burst}); "
            f"retry in {wait:.1f} s",
        )


def check_quotas(usage: Usage, limits: UserLimits, new_bytes: int = 0) -> None:
    """Refuse a new job when the user already has their maximum of active jobs, or when its
    `new_bytes` would take what they store over their quota (a user already at or over it can add
    nothing: outputs of running jobs can take it there)."""
    if limits.max_active_jobs and usage.active_jobs >= limits.max_active_jobs:
        raise LimitExceededError(
            ACTIVE_JOBS, usage, ACTIVE_JOBS_RETRY_SECONDS,
            f"{usage.active_jobs} of your jobs are pending or running, the most allowed at once; "
            "wait for one to finish (or cancel one)",
        )
    quota = limits.max_stored_bytes
    if quota and (usage.stored_bytes >= quota or usage.stored_bytes + new_bytes > quota):
        raise LimitExceededError(
            STORED_BYTES, usage, 0.0,
            f"storage quota exceeded: your jobs store {usage.stored_bytes} bytes, this upload "
            f"{'would add ' + str(new_bytes) + ' more' if new_bytes else 'adds more'}, and the quota is "
            f"{quota} bytes; delete jobs you no longer need",
        )


def remaining_bytes(usage: Usage, limits: UserLimits) -> int:
    """Bytes a new submission may store; -1 without a quota."""
    if not limits.max_stored_bytes:
        return -1
    return max(0, limits.max_stored_bytes - usage.stored_bytes)
