"""The launcher (`make run`) takes its ports from the services' own variables, explains clashes, and
supervises: what dies is restarted with backoff, a crash loop is reported, Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tools.launcher import ROOT, CrashLoopError, Platform, Ports, RestartPolicy, Supervisor, free_port


def test_ports_follow_the_service_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = {name: free_port() for name in ("http", "nats", "jobs", "storage", "processor")}
    monkeypatch.setenv("RADIOLOGY_HTTP_PORT", str(wanted["http"]))
    monkeypatch.setenv("RADIOLOGY_NATS_PORT", str(wanted["nats"]))
    for name in ("jobs", "storage", "processor"):
        monkeypatch.setenv(f"RADIOLOGY_{name.upper()}_ADDR", f"127.0.0.1:{wanted[name]}")
    ports = Ports.from_env()
    assert {n: getattr(ports, n) for n in wanted} == wanted
    assert ports.busy() == []


def test_taken_ports_are_named_with_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("RADIOLOGY_STORAGE_ADDR", f"127.0.0.1:{port}")
        assert f"{port} (RADIOLOGY_STORAGE_ADDR)" in Ports.from_env().busy()


def test_a_taken_default_metrics_port_is_replaced() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 9102))
        except OSError:
            pass  # already taken by something else: the point stands
        taken.listen()
        ports = Ports.from_env()
        assert ports.metrics["storage"] != 9102
        assert len(set(ports.metrics.values())) == 3


def test_a_service_whose_metrics_port_is_taken_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "RADIOLOGY_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
               "RADIOLOGY_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
               "RADIOLOGY_METRICS_PORT": str(taken.getsockname()[1])}
        proc = subprocess.run([sys.executable, "-m", "services.storage.server"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot serve metrics" in proc.stderr and "RADIOLOGY_METRICS_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_data_folder_is_private_to_its_owner(tmp_path: Path) -> None:
    """var/ holds every user's files, the jobs database, the logs and the NATS passwords: another
    account on the machine must not read any of it, also when an earlier start left it open."""
    fresh = Platform(tmp_path / "new" / "var", Ports.free())
    fresh.prepare_data_dir()
    assert _mode(fresh.data_dir) == 0o700
    opened = tmp_path / "old"
    opened.mkdir(mode=0o755)
    (opened / "jobs.db").write_bytes(b"")
    opened.chmod(0o755)
    Platform(opened, Ports.free()).prepare_data_dir()
    assert _mode(opened) == 0o700
    assert (opened / "jobs.db").exists()


def test_the_anonymize_secret_is_made_once_and_given_to_the_processor_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` generates the key of anonymize's UID replacement once under var/ (0600, like the
    NATS passwords), keeps it across restarts, and hands it to the processor only."""
    from services.processor.operations.anonymize import secret_problem

    monkeypatch.delenv("RADIOLOGY_ANONYMIZE_SECRET", raising=False)
    platform = Platform(tmp_path / "var", Ports.free())
    platform.prepare_data_dir()
    secret = platform.env_for("processor")["RADIOLOGY_ANONYMIZE_SECRET"]
    key_file = platform.data_dir / "anonymize.key"
    assert key_file.read_text().strip() == secret and _mode(key_file) == 0o600
    assert secret_problem(secret) is None
    for other in ("storage", "jobs", "gateway"):
        assert "RADIOLOGY_ANONYMIZE_SECRET" not in platform.env_for(other), other
    key_file.chmod(0o644)
    restarted = Platform(tmp_path / "var", Ports.free())  # the next `make run`
    assert restarted.env_for("processor")["RADIOLOGY_ANONYMIZE_SECRET"] == secret
    assert _mode(key_file) == 0o600
    assert Platform(tmp_path / "other", Ports.free()).env_for("processor")[
        "RADIOLOGY_ANONYMIZE_SECRET"] != secret  # another data folder, another key
    # A value set in the environment is used instead, and still reaches the processor alone.
    monkeypatch.setenv("RADIOLOGY_ANONYMIZE_SECRET", "operator-chosen-secret-0123456789abcdef")
    assert restarted.env_for("processor")["RADIOLOGY_ANONYMIZE_SECRET"] == (
        "operator-chosen-secret-0123456789abcdef")
    assert "RADIOLOGY_ANONYMIZE_SECRET" not in restarted.env_for("gateway")


# --- supervision (`make run` restarts what dies) ---------------------------------------------


def test_restart_backoff_doubles_to_its_cap() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]


def _children(pid: int) -> dict[int, str]:
    """Direct children of `pid`: pid -> command line (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                found[child] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _group_members(pgids: set[int]) -> list[int]:
    """Live processes (not zombies) in any of these process groups."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            alive.append(int(stat.parent.name))
    return alive


def _pid_of(launcher: subprocess.Popen[bytes], name: str) -> int:
    marker = "nats-server" if name == "nats" else f"services.{name}.server"
    pids = [pid for pid, cmd in _children(launcher.pid).items() if marker in cmd]
    assert len(pids) == 1, (name, _children(launcher.pid))
    return pids[0]


class Launched:
    """`python -m tools.launcher` as `make run` starts it, on free ports, output in files."""

    def __init__(self, tmp: Path) -> None:
        from tests.conftest import PLATFORM_TEST_ENV

        self.ports = Ports.free()
        self.base_url = f"http://127.0.0.1:{self.ports.http}"
        self.out = tmp / "launcher.out"
        self.err = tmp / "launcher.err"
        env = {**os.environ, **PLATFORM_TEST_ENV, "PYTHONPATH": str(ROOT),
               "RADIOLOGY_DATA_DIR": str(tmp / "data"),
               "RADIOLOGY_HTTP_PORT": str(self.ports.http), "RADIOLOGY_NATS_PORT": str(self.ports.nats),
               "RADIOLOGY_JOBS_ADDR": f"127.0.0.1:{self.ports.jobs}",
               "RADIOLOGY_STORAGE_ADDR": f"127.0.0.1:{self.ports.storage}",
               "RADIOLOGY_PROCESSOR_ADDR": f"127.0.0.1:{self.ports.processor}"}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tools.launcher"], cwd=ROOT, env=env,
                                         stdout=out, stderr=err)
        self.wait_for(lambda: "platform ready" in self.out.read_text(), 120, "the platform to start")
        self.pgids = set(_children(self.proc.pid))  # each child leads its own process group

    def wait_for(self, check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None and not check():
                raise AssertionError(f"launcher exited ({self.proc.returncode}) waiting for {what}:\n"
                                     + self.err.read_text()[-3000:])
            time.sleep(0.2)
        raise AssertionError(f"no {what} after {timeout}s:\n" + self.err.read_text()[-3000:])

    def events(self) -> list[dict[str, object]]:
        lines = [line for line in self.err.read_text().splitlines() if '"service": "launcher"' in line]
        return [json.loads(line) for line in lines]

    def ready(self) -> bool:
        try:
            return httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def blur_succeeds(self) -> None:
        from tests.e2e.conftest import png_bytes, submit, wait_job

        with httpx.Client(base_url=self.base_url, headers={"X-User-ID": "alice"}, timeout=30) as c:
            r = submit(c, [("a.png", png_bytes())])
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["job_id"], 90)["status"] == "SUCCESS"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in _group_members(self.pgids):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launched(tmp_path: Path):  # type: ignore[no-untyped-def]
    launcher = Launched(tmp_path)
    yield launcher
    launcher.close()


@pytest.mark.slow
def test_each_killed_process_comes_back_and_serves(launched: Launched) -> None:
    """SIGKILL each process in turn (nats-server too): restarted, logged, and a job succeeds."""
    launched.blur_succeeds()
    for name in ("processor", "nats", "jobs", "storage", "gateway"):
        old = _pid_of(launched.proc, name)
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        launched.wait_for(lambda: any(e.get("message") == f"{name} is serving again"  # noqa: B023
                                      for e in launched.events()), 60, f"{name} to come back")
        serving = time.monotonic() - killed
        assert _pid_of(launched.proc, name) != old
        died = [e for e in launched.events() if e.get("service_name") == name and e.get("signal")]
        assert len(died) == 1 and died[0]["signal"] == "SIGKILL" and died[0]["level"] == "warning"
        assert any(e.get("restarts") == 1 and e["message"] == f"restarting {name} (restart 1)"
                   for e in launched.events())
        launched.wait_for(launched.ready, 60, "readiness after the restart")
        launched.blur_succeeds()
        print(f"\n[launcher] {name}: SIGKILL -> serving again {serving:.1f}s, "
              f"-> a job done {time.monotonic() - killed:.1f}s")
    assert launched.proc.poll() is None


@pytest.mark.slow
def test_a_crash_loop_is_reported_and_stops_the_platform(launched: Launched) -> None:
    # The gateway is killed and its port taken: every restart exits at once (port in use).
    assert all(launched.ready() for _ in range(3))  # leaves closed connections on its port
    with socket.socket() as squatter:
        # As servers do: connections of the killed gateway in TIME_WAIT must not block the bind.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(_pid_of(launched.proc, "gateway"), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:
            try:
                squatter.bind(("127.0.0.1", launched.ports.http))
                break
            except OSError:
                assert time.monotonic() < deadline, "the gateway's port was not freed"
                time.sleep(0.01)
        squatter.listen()
        killed = time.monotonic()
        assert launched.proc.wait(120) == 1
        print(f"\n[launcher] crash loop: given up {time.monotonic() - killed:.1f}s after the first death")
    errors = [e for e in launched.events() if e["level"] == "error"]
    assert len(errors) == 1 and errors[0]["service_name"] == "gateway"
    assert "keeps crashing" in str(errors[0]["message"]) and errors[0]["restarts"] == 5
    assert _group_members(launched.pgids) == []  # everything else stopped too


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_stops_every_child(launched: Launched, sig: signal.Signals) -> None:
    pool = [pid for pid in _children(_pid_of(launched.proc, "processor"))]
    assert pool, "the processor's worker pool should be running"
    started = time.monotonic()
    launched.proc.send_signal(sig)
    assert launched.proc.wait(60) == 0
    took = time.monotonic() - started
    print(f"\n[launcher] {sig.name} -> every process gone in {took:.1f}s")
    assert took < 30
    assert _group_members(launched.pgids) == []
    assert not [pid for pid in pool if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


class _FakeProc:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class _FakePlatform:
    """Just what Supervisor uses: processes by name, start/reap, and health (always fine)."""

    def __init__(self) -> None:
        self.procs: dict[str, _FakeProc] = {n: _FakeProc() for n in ("nats", "storage", "jobs",
                                                                      "processor", "gateway")}
        self.started: list[str] = []

    def start_service(self, name: str, wait: bool = True) -> None:
        self.procs[name] = _FakeProc()
        self.started.append(name)

    def start_nats(self, wait: bool = True) -> None:
        self.start_service("nats")

    def reap(self, name: str) -> None:
        self.procs.pop(name, None)

    def is_healthy(self, name: str) -> bool:
        return True


def test_backoff_grows_with_each_crash_and_resets_after_a_stable_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    platform = _FakePlatform()
    sup = Supervisor(platform, RestartPolicy())  # type: ignore[arg-type]
    now = 1000.0

    def crash_and_restart() -> float:
        """Crash the processor now; returns the delay before the supervisor restarted it."""
        nonlocal now
        platform.procs["processor"].returncode = -9
        sup.step(now)
        died = now
        while "processor" not in platform.procs:
            now += 0.05
            sup.step(now)
        return round(now - died, 1)

    assert [crash_and_restart() for _ in range(3)] == [0.5, 1.0, 2.0]
    now += 31
    sup.step(now)  # up for 31 s: stable
    assert crash_and_restart() == 0.5
    assert platform.started == ["processor"] * 4
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    died = [e for e in events if "died" in e["message"]]
    assert [e["restarts"] for e in died] == [0, 1, 2, 3] and died[0]["signal"] == "SIGKILL"
    assert all(e["service_name"] == "processor" for e in events)


def test_the_sixth_death_within_a_minute_is_a_crash_loop(capsys: pytest.CaptureFixture[str]) -> None:
    platform = _FakePlatform()
    sup = Supervisor(platform, RestartPolicy(first=0.1, cap=0.1))  # type: ignore[arg-type]
    now = 0.0
    for _ in range(5):
        platform.procs["jobs"].returncode = 3
        sup.step(now)
        now += 0.2
        sup.step(now)  # restarted
    platform.procs["jobs"].returncode = 3
    with pytest.raises(CrashLoopError):
        sup.step(now)
    error = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert error["level"] == "error" and error["service_name"] == "jobs"
    assert error["exit_code"] == 3 and error["restarts"] == 5


def test_a_start_that_fails_counts_like_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    platform = _FakePlatform()

    def cannot_start(wait: bool = True) -> None:
        raise OSError("No such file or directory: 'nats-server'")

    platform.start_nats = cannot_start  # type: ignore[method-assign]
    sup = Supervisor(platform, RestartPolicy(first=0.1, cap=0.1))  # type: ignore[arg-type]
    platform.procs["nats"].returncode = 1
    now = 0.0
    with pytest.raises(CrashLoopError):
        for _ in range(100):
            sup.step(now)
            now += 0.2
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    # died, then 5 restarts that cannot start: the 5th is a crash loop
    assert [e["message"] for e in events if "cannot start" in e["message"]] == [
        "cannot start nats; restarting in 0.1s"] * 4
    assert events[-1]["level"] == "error" and "nats keeps crashing" in events[-1]["message"]
    assert events[-1]["restarts"] == 5 and "nats-server" in events[-1]["error"]
