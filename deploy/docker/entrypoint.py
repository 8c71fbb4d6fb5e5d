#!/opt/venv/bin/python
"""The image's entry point: the first argument chooses what the container runs.

    radiology gateway | jobs | storage | processor
        exec `python -m services.<name>.server` (it becomes PID 1 and drains on SIGTERM)
    radiology healthcheck <gateway|jobs|storage|processor|http://...>
        exit 0 when that service in this container answers: the gateway's GET /readyz, a gRPC
        service's grpc.health.v1 Check, or any URL answering 2xx; exit 1 otherwise (for compose
        healthchecks; Kubernetes uses its native gRPC and HTTP probes instead)
    radiology migrate
        apply the jobs database migrations (RADIOLOGY_DATABASE_URL) and exit; the jobs service also
        does this at start, under a PostgreSQL advisory lock, so this is only needed for upgrades
        that want the schema changed before the new pods start
    radiology help
        this text
Anything else is executed as given (for example `radiology python -c ...` or `sh`).

Everything is configured by RADIOLOGY_* environment variables (services/common/config.py).
"""

from __future__ import annotations

import os
import sys

SERVICES = ("gateway", "jobs", "storage", "processor")


def _healthcheck(target: str) -> int:
    import urllib.error
    import urllib.request

    from services.common.config import Settings, listen_port

    settings = Settings()
    if target == "gateway":
        target = f"http://127.0.0.1:{settings.http_port}/readyz"
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=5) as response:  # noqa: S310 - local probe
                ok = 200 <= response.status < 300
        except (urllib.error.URLError, OSError) as exc:
            print(f"{target}: {exc}", file=sys.stderr)
            return 1
        return 0 if ok else 1
    if target not in SERVICES:
        print(f"healthcheck: unknown target {target!r}", file=sys.stderr)
        return 2

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    addr = {
        "jobs": settings.jobs_addr,
        "storage": settings.storage_addr,
        "processor": settings.processor_addr,
    }[target]
    with grpc.insecure_channel(f"127.0.0.1:{listen_port(addr)}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}", file=sys.stderr)
    return 0 if serving else 1


def _migrate() -> int:
    import asyncio

    from services.common.config import Settings
    from services.jobs.migrate import upgrade
    from services.jobs.models import make_engine

    async def run() -> None:
        engine = make_engine(Settings().database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("database schema is up to date")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command in SERVICES:
        os.execv(sys.executable, [sys.executable, "-m", f"services.{command}.server", *argv[1:]])
    if command == "healthcheck":
        if len(argv) != 2:
            print("usage: radiology healthcheck <gateway|jobs|storage|processor|URL>", file=sys.stderr)
            return 2
        return _healthcheck(argv[1])
    if command == "migrate":
        return _migrate()
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    try:
        os.execvp(command, argv)
    except FileNotFoundError:
        print(f"radiology: unknown command {command!r} (try `help`)", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
