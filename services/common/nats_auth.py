"""Who may do what on NATS: the one permission table of the services' NATS users, and the
nats-server configuration rendered from it.

`make run` (tools/launcher.py) generates a password per service under `var/nats-auth/` and writes
the server configuration with `server_config`; compose and Kubernetes include
`deploy/k8s/components/nats/nats-auth.conf`, rendered from this table by
`python -m services.common.nats_auth` (a test fails while it is stale). Each user gets exactly
what its service's code uses (services/common/messaging.py names the streams and subjects):

- jobs: publishes tasks, job-changed and job-cancelled; creates and updates both streams; purges a
  cancelled job's queued tasks; owns the durable "jobs" on the events stream (create, pull, ack);
  creates and updates the processors' durable "processor" on the tasks stream (at start, and the
  reconciler when it is missing) without pulling from it; may get a message of either stream and
  read the processors' durable's info (the reconciler asks whether a task is still queued or has
  events not yet applied).
- processor: uses the durable "processor" on the tasks stream, which it may not create or change
  (a changed filter or max_deliver would starve every replica, like a purge): reads its info (to
  wait for it, and for the queue depth), pulls, acks/naks/in-progress; publishes task events; hears
  job-cancelled; may read the streams' info (to wait for the jobs service to create them). Nothing
  else: no other consumer (so no second reader of the tasks), no message get, no purge or delete,
  no task publishing.

Each service gets its replies (JetStream API answers, pulled messages) on its own inbox prefix
(messaging.inbox_prefix), so no user can listen to another's replies. Nothing is allowed to delete a
stream or a consumer, and a client without credentials is refused.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common import messaging as m

JOBS = "jobs"
PROCESSOR = "processor"
SERVICES = (JOBS, PROCESSOR)
CREDENTIALS_FILE = "credentials.json"
CONFIG_FILE = "nats-server.conf"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _consumer_admin(stream: str, durable: str) -> tuple[str, ...]:
    """Create/update (all API forms) and info of one durable consumer."""
    return (
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
    )


def _consumer_pull(stream: str, durable: str) -> tuple[str, ...]:
    """Pull from one durable consumer, and ack, nak, term or in-progress its messages."""
    return (
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


_STREAMS = (m.TASKS_STREAM, m.EVENTS_STREAM)

PERMISSIONS: dict[str, Permissions] = {
    JOBS: Permissions(
        publish=(
            f"{m.TASKS_SUBJECT}.>",
            f"{m.JOB_CHANGED_SUBJECT}.>",
            m.JOB_CANCELLED_SUBJECT,
            *(f"$JS.API.STREAM.{op}.{stream}" for stream in _STREAMS for op in ("CREATE", "UPDATE", "INFO")),
            f"$JS.API.STREAM.PURGE.{m.TASKS_STREAM}",
            # The reconciler: is a task's message still queued (message get); is the processors'
            # durable there (info), else re-create it. The jobs service alone defines that durable.
            *(f"$JS.API.STREAM.MSG.GET.{stream}" for stream in _STREAMS),
            *_consumer_admin(m.TASKS_STREAM, m.PROCESSOR_DURABLE),
            *_consumer_admin(m.EVENTS_STREAM, m.JOBS_DURABLE),
            *_consumer_pull(m.EVENTS_STREAM, m.JOBS_DURABLE),
        ),
        subscribe=(f"{m.JOB_CHANGED_SUBJECT}.>", f"{m.inbox_prefix(JOBS)}.>"),
    ),
    PROCESSOR: Permissions(
        publish=(
            f"{m.EVENTS_SUBJECT}.>",
            *(f"$JS.API.STREAM.INFO.{stream}" for stream in _STREAMS),
            # Its durable: look it up and pull from it; never create, change or delete it.
            f"$JS.API.CONSUMER.INFO.{m.TASKS_STREAM}.{m.PROCESSOR_DURABLE}",
            *_consumer_pull(m.TASKS_STREAM, m.PROCESSOR_DURABLE),
        ),
        subscribe=(m.JOB_CANCELLED_SUBJECT, f"{m.inbox_prefix(PROCESSOR)}.>"),
    ),
}


# --- credentials -----------------------------------------------------------------------------------

def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_credentials(folder: Path) -> dict[str, str]:
    """Each service's NATS password, generated once (random) and kept in `folder/credentials.json`
    (mode 0600, folder 0700) so that a restart keeps them."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / CREDENTIALS_FILE
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except ValueError:
            raise SystemExit(f"{path} is not valid JSON; remove it to make new NATS credentials") from None
        passwords = {k: v for k, v in loaded.items() if k in SERVICES and isinstance(v, str) and v}
    changed = False
    for service in SERVICES:
        if service not in passwords:
            passwords[service] = secrets.token_urlsafe(32)
            changed = True
    if changed or not path.exists():
        write_private(path, json.dumps(passwords, indent=2) + "\n")
    path.chmod(0o600)
    return passwords


# --- the server configuration ----------------------------------------------------------------------

def _quote(text: str) -> str:
    # JSON strings are valid nats-server config strings; a quoted "$..." is literal, not a variable.
    return json.dumps(text)


def _password(value: str) -> str:
    # "$NAME" stays unquoted: nats-server reads it from its environment (for compose/k8s configs).
    return value if value.startswith("$") and value[1:].replace("_", "").isalnum() else _quote(value)


def authorization(passwords: Mapping[str, str]) -> str:
    """The `authorization` block: one user per service with its permissions; no anonymous access
    (no `no_auth_user`), so a client without credentials is refused."""
    users = []
    for service in SERVICES:
        perms = PERMISSIONS[service]
        publish = ", ".join(_quote(s) for s in perms.publish)
        subscribe = ", ".join(_quote(s) for s in perms.subscribe)
        users.append(
            f"    {{\n      user: {_quote(service)}\n      password: {_password(passwords[service])}\n"
            f"      permissions: {{\n        publish: {{ allow: [{publish}] }}\n"
            f"        subscribe: {{ allow: [{subscribe}] }}\n      }}\n    }}"
        )
    return "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"


def server_config(passwords: Mapping[str, str], *, host: str, port: int, store_dir: Path) -> str:
    return (
        "# Written by tools/launcher.py from services/common/nats_auth.py; rewritten at every start.\n"
        f"listen: {_quote(f'{host}:{port}')}\n"
        f"jetstream {{\n  store_dir: {_quote(str(store_dir))}\n}}\n"
        + authorization(passwords)
    )


def write_server_config(
    folder: Path, *, host: str, port: int, store_dir: Path
) -> tuple[Path, dict[str, str]]:
    """Credentials (kept) and a fresh server configuration in `folder`; returns the config's path."""
    passwords = ensure_credentials(folder)
    path = folder / CONFIG_FILE
    write_private(path, server_config(passwords, host=host, port=port, store_dir=store_dir))
    return path, passwords


# --- compose and Kubernetes ------------------------------------------------------------------------

DEPLOY_FILE = Path("deploy/k8s/components/nats/nats-auth.conf")
# Compose and Kubernetes hand nats-server each service's password in its environment.
DEPLOY_PASSWORDS = {JOBS: "$NATS_JOBS_PASSWORD", PROCESSOR: "$NATS_PROCESSOR_PASSWORD"}


def deploy_config() -> str:
    return (
        "# The NATS users of the platform and their permissions, for docker-compose.yml and Kubernetes\n"
        "# (included by nats.conf). Rendered from services/common/nats_auth.py by\n"
        "# `python -m services.common.nats_auth`: edit the table there, not this file.\n"
        "# Passwords come from the server's environment (NATS_JOBS_PASSWORD, NATS_PROCESSOR_PASSWORD).\n"
        + authorization(DEPLOY_PASSWORDS)
    )


if __name__ == "__main__":
    DEPLOY_FILE.write_text(deploy_config())
    print(f"wrote {DEPLOY_FILE}")
