"""Start the whole platform on one machine: nats-server (JetStream) and the four services, each as
its own process, waiting for each to be healthy. Used by `make run` and by the end-to-end tests.

    python -m tools.launcher            # serves http://127.0.0.1:8000 until Ctrl-C

`make run` then supervises (Supervisor, RestartPolicy): a process that dies, nats-server included,
is restarted with backoff and the event logged; one that keeps crashing stops the platform with
exit status 1. Ctrl-C or SIGTERM stops everything.

Ports and folders come from RADIOLOGY_* variables (see README); data lives under RADIOLOGY_DATA_DIR
(default var/, private to its owner: 0700), so a restart keeps every job and file. NATS runs with
authorization: each service that uses it gets its own user and generated password (var/nats-auth/,
kept across restarts) with only the subjects services/common/nats_auth.py grants it; a client
without credentials is refused. The processors' RADIOLOGY_ANONYMIZE_SECRET (the key of the anonymize
operation's UID replacement) is generated once too, in var/anonymize.key (0600), and given to the
processor alone; a value set in the environment is used instead.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import nats_auth

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("storage", "jobs", "processor", "gateway")  # start order; stop in reverse
ANONYMIZE_SECRET_ENV = "RADIOLOGY_ANONYMIZE_SECRET"
ANONYMIZE_SECRET_FILE = "anonymize.key"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _addr_port(addr: str | None, default: int) -> int:
    if not addr:
        return default
    try:
        return int(addr.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise SystemExit(f"not a host:port address: {addr!r}") from None


def nats_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    return str(local) if local.exists() else "nats-server"


def ensure_anonymize_secret(data_dir: Path) -> str:
    """The processors' anonymize secret, generated once (random) and kept in
    `data_dir/anonymize.key` (mode 0600, like the NATS passwords) so that a restart keeps it: every
    task of a job must replace UIDs with the same key, and a new key gives later jobs other UIDs."""
    path = Path(data_dir) / ANONYMIZE_SECRET_FILE
    if path.exists():
        secret = path.read_text().strip()
        if not secret:
            raise SystemExit(f"{path} is empty; remove it to make a new anonymize secret")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        nats_auth.write_private(path, secret + "\n")
    path.chmod(0o600)
    return secret


@dataclass
class Ports:
    http: int = 8000
    nats: int = 4322
    jobs: int = 50051
    storage: int = 50052
    processor: int = 50053
    metrics: dict[str, int] = field(
        default_factory=lambda: {"jobs": 9101, "storage": 9102, "processor": 9103}
    )

    @classmethod
    def from_env(cls) -> Ports:
        """Ports from the same variables the services read (RADIOLOGY_HTTP_PORT, the port of
        RADIOLOGY_JOBS_ADDR/_STORAGE_ADDR/_PROCESSOR_ADDR) plus RADIOLOGY_NATS_PORT. A default
        metrics port that is taken is replaced by a free one: metrics must not stop the platform."""
        env = os.environ
        ports = cls(
            http=int(env.get("RADIOLOGY_HTTP_PORT", 8000)),
            nats=int(env.get("RADIOLOGY_NATS_PORT", 4322)),
            jobs=_addr_port(env.get("RADIOLOGY_JOBS_ADDR"), 50051),
            storage=_addr_port(env.get("RADIOLOGY_STORAGE_ADDR"), 50052),
            processor=_addr_port(env.get("RADIOLOGY_PROCESSOR_ADDR"), 50053),
        )
        ports.metrics = {n: p if port_is_free(p) else free_port() for n, p in ports.metrics.items()}
        return ports

    def busy(self) -> list[str]:
        """The ports that are taken, each with the variable that moves it."""
        named = {
            "RADIOLOGY_HTTP_PORT": self.http, "RADIOLOGY_NATS_PORT": self.nats,
            "RADIOLOGY_JOBS_ADDR": self.jobs, "RADIOLOGY_STORAGE_ADDR": self.storage,
            "RADIOLOGY_PROCESSOR_ADDR": self.processor,
        }
        return [f"{port} ({var})" for var, port in named.items() if not port_is_free(port)]

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(),
                   {"jobs": free_port(), "storage": free_port(), "processor": free_port()})


class Platform:
    """The running platform: `start()`, `stop()`, and per-service `kill`/`start_service` for tests."""

    def __init__(self, data_dir: Path, ports: Ports | None = None, env: dict[str, str] | None = None,
                 log_to_files: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.ports = ports or Ports.from_env()
        self.extra_env = env or {}
        self.log_to_files = log_to_files
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.base_url = f"http://127.0.0.1:{self.ports.http}"
        self.nats_url = f"nats://127.0.0.1:{self.ports.nats}"
        self.nats_auth_dir = self.data_dir / "nats-auth"

    # --- environment -----------------------------------------------------------------------
    def env_for(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RADIOLOGY_DATA_DIR=str(self.data_dir),
            RADIOLOGY_NATS_URL=self.nats_url,
            RADIOLOGY_JOBS_ADDR=f"127.0.0.1:{self.ports.jobs}",
            RADIOLOGY_STORAGE_ADDR=f"127.0.0.1:{self.ports.storage}",
            RADIOLOGY_PROCESSOR_ADDR=f"127.0.0.1:{self.ports.processor}",
            RADIOLOGY_HTTP_PORT=str(self.ports.http),
            RADIOLOGY_WEB_DIR=env.get("RADIOLOGY_WEB_DIR", str(ROOT / "web" / "dist")),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            PYTHONUNBUFFERED="1",
        )
        env["RADIOLOGY_METRICS_PORT"] = str(self.ports.metrics.get(name, 0))
        # The anonymize secret goes to the processor only, never to the services that don't use it.
        secret = env.pop(ANONYMIZE_SECRET_ENV, "")
        if name == "processor":
            env[ANONYMIZE_SECRET_ENV] = secret or ensure_anonymize_secret(self.data_dir)
        if name in nats_auth.SERVICES:  # only the services that use NATS get credentials for it
            env["RADIOLOGY_NATS_USER"] = name
            env["RADIOLOGY_NATS_PASSWORD"] = nats_auth.ensure_credentials(self.nats_auth_dir)[name]
        env.update(self.extra_env)
        return env

    def _output(self, name: str):  # type: ignore[no-untyped-def]
        if not self.log_to_files:
            return None
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process

    # --- lifecycle -------------------------------------------------------------------------
    def prepare_data_dir(self) -> None:
        """Create the data folder, private to its owner (0700), also when an earlier start made it
        readable: it holds every user's files, the jobs database (job ids, file names, errors), the
        logs, the NATS passwords and the anonymize secret, none of which another account on the
        machine may read."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)

    def start(self) -> None:
        self.prepare_data_dir()
        busy = self.ports.busy()
        if busy:
            raise SystemExit(f"ports already in use: {', '.join(busy)}; set the variable to move each")
        try:
            self.start_nats()
            for name in SERVICES:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise

    def start_nats(self, wait: bool = True) -> None:
        out = self._output("nats")
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        config, _ = nats_auth.write_server_config(
            self.nats_auth_dir, host="127.0.0.1", port=self.ports.nats, store_dir=self.data_dir / "nats"
        )
        # Its plain-text log goes to a file, so the terminal shows only the services' JSON lines.
        self.procs["nats"] = subprocess.Popen(
            [nats_binary(), "-c", str(config), "-l", str(logs / "nats-server.log")],
            stdout=out, stderr=out, start_new_session=True,
        )
        if wait:
            self._wait(lambda: not port_is_free(self.ports.nats), "nats", 20)

    def start_service(self, name: str, wait: bool = True) -> None:
        out = self._output(name)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}.server"],
            cwd=ROOT, env=self.env_for(name), stdout=out, stderr=out, start_new_session=True,
        )
        if wait:
            self.wait_healthy(name)

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        self._wait(lambda: self.is_healthy(name), name, timeout)

    def is_healthy(self, name: str) -> bool:
        """One quick check: NATS listens, a gRPC service answers SERVING, the gateway is ready."""
        if name == "nats":
            return not port_is_free(self.ports.nats)
        if name == "gateway":
            return _http_ok(self.base_url + "/readyz")
        return _grpc_serving(getattr(self.ports, name))

    def _wait(self, check, name: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not healthy after {timeout:.0f}s")

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        _kill_group(proc.pid)  # anything the service left behind (e.g. pool workers)
        return proc.returncode

    def reap(self, name: str) -> None:
        """Forget a process that has exited, removing whatever it left in its group."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.wait()
            _kill_group(proc.pid)

    def kill(self, name: str) -> None:
        """SIGKILL a service and everything it started, as when its container dies."""
        proc = self.procs.get(name)
        if proc is not None:
            _kill_group(proc.pid)
        self.stop_service(name)

    def stop(self) -> None:
        for name in (*reversed(SERVICES), "nats"):
            self.stop_service(name)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _grpc_serving(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


@dataclass
class RestartPolicy:
    """How the launcher restarts a service that dies: after `first` seconds, doubling up to `cap`;
    back to `first` once it has stayed up `stable` seconds. `max_restarts` restarts of one service
    within `window` seconds is a crash loop: the launcher logs an error, stops everything and exits
    with status 1 (a platform missing a service cannot do its work, and a silent half-platform is
    worse than a loud stop)."""

    first: float = 0.5
    cap: float = 10.0
    stable: float = 30.0
    max_restarts: int = 5
    window: float = 60.0

    def delay(self, consecutive: int) -> float:
        """Seconds before restart number `consecutive` (1-based) of a service since it was stable."""
        return min(self.cap, self.first * 2 ** max(0, consecutive - 1))


@dataclass
class _Watch:
    restarts: int = 0  # in total, for the log
    consecutive: int = 0  # since the service last stayed up `stable` seconds
    started_at: float = 0.0
    restart_times: list[float] = field(default_factory=list)
    restart_at: float | None = None  # set while a restart waits out its backoff
    healthy: bool = True


class CrashLoopError(RuntimeError):
    pass


def describe_exit(returncode: int) -> dict[str, object]:
    """Exit code, or the signal's name when a signal ended the process (Popen's negative code)."""
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": -returncode}
    return {"exit_code": returncode}


def log_event(level: str, message: str, **fields: object) -> None:
    """One JSON line on stderr, in the services' log format, so the terminal stays one stream."""
    entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "service": "launcher",
             "level": level, "logger": "launcher", "message": message, **fields}
    print(json.dumps(entry), file=sys.stderr, flush=True)


class Supervisor:
    """Watches the platform's processes and restarts the ones that die (see RestartPolicy).
    `step()` does one non-blocking round, so the caller's loop stays responsive to Ctrl-C."""

    def __init__(self, platform: Platform, policy: RestartPolicy | None = None) -> None:
        self.platform = platform
        self.policy = policy or RestartPolicy()
        now = time.monotonic()
        self.watch = {name: _Watch(started_at=now) for name in ("nats", *SERVICES)}

    def step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for name, w in self.watch.items():
            proc = self.platform.procs.get(name)
            if w.restart_at is not None:
                if now >= w.restart_at:
                    self._restart(name, w, now)
                continue
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                if not w.healthy and self.platform.is_healthy(name):
                    w.healthy = True
                    log_event("info", f"{name} is serving again", service_name=name, restarts=w.restarts)
                if w.consecutive and now - w.started_at >= self.policy.stable:
                    w.consecutive = 0  # it stayed up: the next crash starts the backoff afresh
                continue
            self._died(name, w, code, now)

    def _died(self, name: str, w: _Watch, code: int, now: float) -> None:
        self.platform.reap(name)
        self._schedule(name, w, now, f"{name} died", describe_exit(code))

    def _schedule(self, name: str, w: _Watch, now: float, what: str, detail: dict[str, object]) -> None:
        """Plan the next restart after a death (or a failed start), or raise CrashLoopError."""
        w.restart_times = [t for t in w.restart_times if now - t < self.policy.window]
        if len(w.restart_times) >= self.policy.max_restarts:
            log_event("error", f"{name} keeps crashing: {len(w.restart_times)} restarts within "
                      f"{self.policy.window:.0f}s; giving up and stopping the platform",
                      service_name=name, restarts=w.restarts, **detail)
            raise CrashLoopError(f"{name} keeps crashing")
        w.consecutive += 1
        delay = self.policy.delay(w.consecutive)
        w.restart_at = now + delay
        log_event("warning", f"{what}; restarting in {delay:.1f}s", service_name=name,
                  restarts=w.restarts, **detail)

    def _restart(self, name: str, w: _Watch, now: float) -> None:
        w.restart_at = None
        w.restarts += 1
        w.restart_times.append(now)
        w.started_at = now
        w.healthy = False
        log_event("warning", f"restarting {name} (restart {w.restarts})", service_name=name,
                  restarts=w.restarts)
        try:
            if name == "nats":
                self.platform.start_nats(wait=False)
            else:
                self.platform.start_service(name, wait=False)
        except OSError as exc:  # counted like a crash
            self._schedule(name, w, now, f"cannot start {name}", {"error": str(exc)})


def main() -> int:
    data_dir = Path(os.environ.get("RADIOLOGY_DATA_DIR", ROOT / "var"))
    platform = Platform(data_dir)
    stop = False
    starting = True

    def on_signal(*_: object) -> None:
        nonlocal stop, starting
        stop = True
        if starting:  # interrupt a start that waits on a service's health (once: stop must finish)
            starting = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting nats-server and services (data in {platform.data_dir}) ...", flush=True)
    try:
        platform.start()
        starting = False
    except KeyboardInterrupt:
        platform.stop()  # start() stopped what it started; this covers a signal just after it
        return 130
    print(f"\n  Radiology platform ready: {platform.base_url}  (UI /, API docs /docs)\n"
          f"  Ctrl-C stops everything.\n", flush=True)
    supervisor = Supervisor(platform)
    status = 0
    try:
        while not stop:
            supervisor.step()
            time.sleep(0.2)
    except CrashLoopError:
        status = 1
    finally:
        print("stopping ...", flush=True)
        platform.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
