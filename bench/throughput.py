"""End-to-end throughput, latency, CPU and memory of the whole platform, through the REST API.

Starts nats-server and the four services on free loopback ports (as `make run` does, data in a
temporary folder), then runs the scenarios interleaved over several rounds, so that each sees the
same machine:

  * 2D scenarios ("png": a 512x512 8-bit grey PNG of noise; "dicom": pydicom's CT_small.dcm,
    128x128; both blurred), each round:
      - SSE load: N jobs, C in flight; a job is POST /jobs, then GET /jobs/{id}/events until the
        stream reports a terminal status;
      - polling load: the same with the original design's client: GET /jobs/{id} every 50 ms;
      - single: S jobs one after another over SSE on an idle platform;
    plus, once, the operation in this process (operations.run: decode, blur, encode): the floor.
    CPU: milliseconds of CPU each service (with its child processes) and nats-server spent per job.
  * "ct3d": a ZIP of 200 synthetic 512x512 CT slices (~100 MB) blurred to NIfTI, one job per round,
    end to end (upload start to the terminal SSE event), against operations.run on the same file in
    a fresh process; the processor's peak memory against the float32 volume, and how much the
    gateway's and storage's peak memory grew.

It ends with the targets table (every row with measured / target) and the details. Everything is
bounded: N, C, S and rounds by flags, every job by --job-timeout, the whole run by --max-seconds.
Only 127.0.0.1 is used. --py-spy DIR records each service with py-spy during the measured rounds.

    .venv/bin/python bench/throughput.py                      # 3 rounds, every scenario
    .venv/bin/python bench/throughput.py -n 100 --rounds 1 --scenarios png dicom
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tools.launcher import Platform, Ports  # noqa: E402

TERMINAL = {"SUCCESS", "FAILED", "CANCELLED"}
USER = "bench"
SERVICES = ("gateway", "jobs", "storage", "processor", "nats")
PYTHON_SERVICES = ("gateway", "jobs", "storage", "processor")
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.05  # the original design's clients poll GET /jobs/{id} this often
MIB = 1024 * 1024
# py-spy stops a process to sample its native stack: a low rate keeps the perturbation small.
PY_SPY_RATE = 100


# --- inputs --------------------------------------------------------------------------------------


def png_input() -> bytes:
    rng = np.random.default_rng(0)
    pixels = (rng.random((512, 512)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def dicom_input() -> bytes:
    import pydicom.data

    return Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]


def ct_input() -> bytes:
    from bench.ct_study import study_zip

    return study_zip(CT_SLICES, CT_SIZE)


CT_SLICES, CT_SIZE = 200, 512


@dataclass
class Scenario:
    name: str
    filename: str
    data: bytes
    params: dict[str, object] = field(default_factory=dict)
    task_type: str = "blur"
    volume: bool = False


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "png": lambda: Scenario("png", "noise512.png", png_input()),
    "dicom": lambda: Scenario("dicom", "CT_small.dcm", dicom_input()),
    "ct3d": lambda: Scenario("ct3d", "ct_study.zip", ct_input(), volume=True),
}


# --- CPU and memory from /proc (a service and all its descendants) -------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _cpu_seconds(pid: int) -> float:
    """utime+stime of the process plus those of its reaped children."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is state (field 3); utime=14, stime=15, cutime=16, cstime=17 (1-based)
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        stack.extend(tree.get(p, ()))
    return found


def tree_cpu(pid: int, tree: dict[int, list[int]]) -> float:
    return sum(_cpu_seconds(p) for p in descendants(pid, tree))


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def cpu_snapshot(platform: Platform) -> dict[str, float]:
    tree = _children()
    snap = {name: tree_cpu(proc.pid, tree) for name, proc in platform.procs.items() if name in SERVICES}
    snap["bench client"] = tree_cpu(os.getpid(), {})  # with its reaped children (fresh processes)
    snap["py-spy"] = sum(tree_cpu(pid, tree) for pid in tree.get(os.getpid(), ())
                         if _comm(pid) == "py-spy")
    snap["machine"] = machine_busy_seconds()
    return snap


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak(pid: int) -> None:
    """Start a new VmHWM measurement (writing 5 to clear_refs resets the peak, Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# --- one job through the API ---------------------------------------------------------------------


class JobError(Exception):
    pass


async def _post(client: httpx.AsyncClient, sc: Scenario) -> str:
    resp = await client.post(
        "/jobs",
        files=[("files", (sc.filename, sc.data))],
        data={"task_type": sc.task_type, "params": json.dumps(sc.params)},
    )
    if resp.status_code != 202:
        raise JobError(f"POST /jobs: {resp.status_code} {resp.text[:200]}")
    return resp.json()["job_id"]


async def job_sse(client: httpx.AsyncClient, sc: Scenario, timeout: float) -> tuple[float, float]:
    """(POST latency, latency to the terminal SSE event), in seconds."""
    t0 = time.perf_counter()
    async with asyncio.timeout(timeout):
        job_id = await _post(client, sc)
        posted = time.perf_counter() - t0
        status, done = "", 0.0
        async with client.stream("GET", f"/jobs/{job_id}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:") and not done:
                    status = json.loads(line[5:])["status"]
                    if status in TERMINAL:
                        done = time.perf_counter() - t0
                        # read on to the end of the stream, so the connection is reused
    if status != "SUCCESS":
        raise JobError(f"job {job_id} ended {status or 'without a terminal event'}")
    return posted, done


async def job_poll(client: httpx.AsyncClient, sc: Scenario, timeout: float) -> tuple[float, float]:
    """The original design's client: POST, then GET /jobs/{id} every POLL_SECONDS until done."""
    t0 = time.perf_counter()
    async with asyncio.timeout(timeout):
        job_id = await _post(client, sc)
        posted = time.perf_counter() - t0
        while True:
            await asyncio.sleep(POLL_SECONDS)
            resp = await client.get(f"/jobs/{job_id}")
            if resp.status_code != 200:
                raise JobError(f"GET /jobs/{job_id}: {resp.status_code}")
            status = resp.json()["status"]
            if status in TERMINAL:
                break
    if status != "SUCCESS":
        raise JobError(f"job {job_id} ended {status}")
    return posted, time.perf_counter() - t0


CLIENTS = {"sse": job_sse, "poll": job_poll}


@dataclass
class LoadResult:
    jobs_per_s: float
    p50: float
    p95: float
    post_p50: float
    errors: int
    cpu_ms_per_job: dict[str, float]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def load(client: httpx.AsyncClient, platform: Platform, sc: Scenario, kind: str, n: int, conc: int,
               timeout: float) -> LoadResult:
    sem = asyncio.Semaphore(conc)
    lat: list[float] = []
    posts: list[float] = []
    errors: list[str] = []
    run_job = CLIENTS[kind]

    async def job() -> None:
        async with sem:
            try:
                posted, done = await run_job(client, sc, timeout)
            except (JobError, TimeoutError, httpx.HTTPError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            posts.append(posted)
            lat.append(done)

    before = cpu_snapshot(platform)
    t0 = time.perf_counter()
    await asyncio.gather(*(job() for _ in range(n)))
    elapsed = time.perf_counter() - t0
    after = cpu_snapshot(platform)
    if errors:
        print(f"    {len(errors)} job(s) failed, first: {errors[0]}", file=sys.stderr)
    cpu = {k: (after[k] - before.get(k, 0.0)) * 1000 / max(1, n) for k in after}
    cpu["others on the machine"] = cpu.pop("machine") - sum(v for k, v in cpu.items() if k != "machine")
    return LoadResult(
        jobs_per_s=len(lat) / elapsed, p50=pct(lat, 0.5), p95=pct(lat, 0.95), post_p50=pct(posts, 0.5),
        errors=len(errors), cpu_ms_per_job=cpu,
    )


async def single(client: httpx.AsyncClient, sc: Scenario, count: int, timeout: float) -> list[float]:
    out = []
    for _ in range(count):
        out.append((await job_sse(client, sc, timeout))[1])
    return out


@dataclass
class VolumeResult:
    seconds: float
    cpu_s: dict[str, float]
    peak_mib: dict[str, float]  # absolute peaks: processor (its largest process), service processes
    growth_mib: dict[str, float]  # peak minus the RSS before the job: gateway, storage


async def volume_job(client: httpx.AsyncClient, platform: Platform, sc: Scenario,
                     timeout: float) -> VolumeResult:
    tree = _children()
    watched = {name: descendants(platform.procs[name].pid, tree) for name in PYTHON_SERVICES}
    for pids in watched.values():
        for pid in pids:
            reset_peak(pid)
    before_rss = {name: peak_rss_mib(platform.procs[name].pid) for name in ("gateway", "storage")}
    cpu0 = cpu_snapshot(platform)
    _, done = await job_sse(client, sc, timeout)
    cpu1 = cpu_snapshot(platform)
    peaks = {name: max(peak_rss_mib(p) for p in pids) for name, pids in watched.items()}
    return VolumeResult(
        seconds=done,
        cpu_s={k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1 if k in SERVICES},
        peak_mib=peaks,
        growth_mib={name: peaks[name] - before_rss[name] for name in before_rss},
    )


def compute_only(sc: Scenario, repeat: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of operations.run on the input in this process (decode, blur,
    encode: no services, no I/O between them)."""
    from services.processor import operations

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / sc.filename
        src.write_bytes(sc.data)
        out = Path(tmp) / "out"
        out.mkdir()
        operations.run(sc.task_type, dict(sc.params), str(src), str(out), "warm")
        walls, cpus = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            operations.run(sc.task_type, dict(sc.params), str(src), str(out), "x")
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def compute_in_fresh_process(sc: Scenario, tmp: Path) -> dict[str, float]:
    """operations.run on the input in a new Python process (as a pool worker runs it): wall and CPU
    seconds, and that process's peak memory."""
    src = tmp / sc.filename
    if not src.exists():
        src.write_bytes(sc.data)
    out = subprocess.run(
        [sys.executable, __file__, "--in-process", str(src), sc.task_type, json.dumps(sc.params)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _in_process(path: str, task_type: str, params: str) -> None:
    from services.processor import operations

    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        operations.run(task_type, json.loads(params), path, out, "study")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": wall, "cpu_s": cpu, "peak_mib": peak}))


# --- py-spy ----------------------------------------------------------------------------------------


class Profilers:
    """py-spy record (collapsed stacks, native frames) on each Python service while measuring."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, platform: Platform) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in PYTHON_SERVICES:
            cmd = ["py-spy", "record", "--native", "--rate", str(PY_SPY_RATE), "--format", "raw",
                   "--output", str(self.folder / f"{name}.txt"), "--pid", str(platform.procs[name].pid)]
            if name == "processor":
                cmd.append("--subprocesses")  # the pool workers
            py_spy = Path(sys.executable).parent / "py-spy"
            if py_spy.exists():
                cmd[0] = str(py_spy)
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Collected:
    loads: dict[str, list[LoadResult]] = field(default_factory=lambda: {k: [] for k in CLIENTS})
    singles: list[float] = field(default_factory=list)
    volumes: list[VolumeResult] = field(default_factory=list)
    fresh: list[dict[str, float]] = field(default_factory=list)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run(args: argparse.Namespace) -> int:
    scenarios = [SCENARIOS[name]() for name in args.scenarios]
    flat = [sc for sc in scenarios if not sc.volume]
    compute = {sc.name: compute_only(sc, args.compute_repeat) for sc in flat}
    results = {sc.name: Collected() for sc in scenarios}
    load_before = os.getloadavg()[0]

    # One user is the whole load here: their submission rate and active-jobs limits are off.
    env = {"RADIOLOGY_LOG_LEVEL": "WARNING", "RADIOLOGY_RATE_LIMIT_PER_MINUTE": "0",
           "RADIOLOGY_MAX_ACTIVE_JOBS_PER_USER": "0", **dict(kv.split("=", 1) for kv in args.env)}
    profilers = Profilers(args.py_spy)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="radiology-bench-") as tmp:
        platform = Platform(Path(tmp) / "data", Ports.free(), env=env, log_to_files=True)
        print(f"starting the platform in {tmp} ...", file=sys.stderr)
        platform.start()
        try:
            limits = httpx.Limits(max_connections=2 * args.concurrency + 4,
                                  max_keepalive_connections=2 * args.concurrency + 4)
            async with httpx.AsyncClient(base_url=platform.base_url, headers={"X-User-ID": USER},
                                         timeout=args.job_timeout, limits=limits) as client:
                async with asyncio.timeout(args.max_seconds):
                    for sc in flat:  # warm-up: first connections, pool workers, caches
                        for kind in CLIENTS:
                            await load(client, platform, sc, kind, min(args.n, 2 * args.concurrency),
                                       args.concurrency, args.job_timeout)
                    profilers.start(platform)
                    for r in range(args.rounds):
                        for sc in scenarios:
                            c = results[sc.name]
                            if sc.volume:
                                vol = await volume_job(client, platform, sc, args.volume_timeout)
                                c.volumes.append(vol)
                                fresh = await asyncio.to_thread(compute_in_fresh_process, sc, Path(tmp))
                                c.fresh.append(fresh)
                                print(f"  round {r + 1} {sc.name}: end to end {vol.seconds:.1f} s, "
                                      f"in-process {c.fresh[-1]['seconds']:.1f} s", file=sys.stderr)
                                continue
                            for kind in CLIENTS:
                                res = await load(client, platform, sc, kind, args.n, args.concurrency,
                                                 args.job_timeout)
                                c.loads[kind].append(res)
                                failed += res.errors
                                print(f"  round {r + 1} {sc.name} {kind}: {res.jobs_per_s:.1f} jobs/s, "
                                      f"p50 {res.p50 * 1000:.0f} ms, POST p50 {res.post_p50 * 1000:.0f} ms",
                                      file=sys.stderr)
                            await asyncio.sleep(0.5)  # let the platform settle before single jobs
                            c.singles += await single(client, sc, args.single, args.job_timeout)
                    profilers.stop()
        finally:
            profilers.stop()
            platform.stop()

    report(args, scenarios, compute, results, load_before)
    return 1 if failed else 0


# --- the report --------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN: not measured


def report(args: argparse.Namespace, scenarios: list[Scenario], compute: dict[str, tuple[float, float]],
           results: dict[str, Collected], load_before: float) -> None:
    flat = [sc.name for sc in scenarios if not sc.volume]
    volumes = [sc.name for sc in scenarios if sc.volume]
    print(f"\n{args.rounds} round(s); 2D: {args.n} jobs per client per round, {args.concurrency} in "
          f"flight, {args.single} single jobs per round; medians over rounds (min-max)")

    def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
        if not values:
            return "-"
        m = _fmt(med(values) * scale, digits)
        if len(values) == 1:
            return m
        return f"{m} ({_fmt(min(values) * scale, digits)}-{_fmt(max(values) * scale, digits)})"

    def row(label: str, cells: list[str], width: int = 22) -> None:
        print(f"{label:<40}" + "".join(f"{c:>{width}}" for c in cells))

    # --- the targets (issue table): measured, target, measured/target (<= 1 is met) ---
    def overhead(name: str) -> float:
        loads = results[name].loads["sse"]
        totals = [sum(r.cpu_ms_per_job.get(s, 0.0) for s in SERVICES) for r in loads]
        return med(totals) - compute[name][1] * 1000

    def cell(values: dict[str, float]) -> str:
        return " / ".join(_fmt(values[n]) for n in flat)

    targets: list[tuple[str, dict[str, float], dict[str, float], str]] = []
    if flat:
        targets += [
            ("platform overhead, CPU ms/job", {n: overhead(n) for n in flat}, {n: 10.0 for n in flat}, "<="),
            ("in-process compute, ms", {n: compute[n][0] * 1000 for n in flat},
             {n: 10.0 if n == "png" else float("nan") for n in flat}, "<="),
            ("single job over SSE - compute, ms",
             {n: med(results[n].singles) * 1000 - compute[n][0] * 1000 for n in flat},
             {n: 8.0 for n in flat}, "<="),
            ("POST /jobs p50 under load, ms", {n: med([r.post_p50 for r in results[n].loads["sse"]]) * 1000
                                               for n in flat}, {n: 20.0 for n in flat}, "<="),
            ("polling client, jobs/s",
             {n: med([r.jobs_per_s for r in results[n].loads["poll"]]) for n in flat},
             {n: {"png": 62.0, "dicom": 145.0}.get(n, float("nan")) for n in flat}, ">="),
        ]
    print("\nTargets (" + " / ".join(flat) + "); ratio = measured/target for <=, target/measured for >=; "
          "<= 1.00 is met")
    print(f"{'measure':<40}{'measured':>22}{'target':>16}{'ratio':>16}   met")
    for label, measured, target, way in targets:
        ratios = {n: (measured[n] / target[n] if way == "<=" else target[n] / measured[n]) for n in flat}
        shown = [n for n in flat if target[n] == target[n]]
        met = all(ratios[n] <= 1.0 for n in shown)
        goal = way + " " + " / ".join(_fmt(target[n], 0) for n in shown)
        print(f"{label:<40}{cell(measured):>22}{goal:>16}"
              f"{' / '.join(_fmt(ratios[n], 2) for n in shown):>16}   {'yes' if met else 'NO'}")
    for name in volumes:
        c = results[name]
        volume_mib = CT_SLICES * CT_SIZE * CT_SIZE * 4 / MIB
        e2e = med([v.seconds for v in c.volumes])
        fresh = med([f["seconds"] for f in c.fresh])
        proc_peak = med([v.peak_mib["processor"] for v in c.volumes])
        growth = {s: med([v.growth_mib[s] for v in c.volumes]) for s in ("gateway", "storage")}
        rows = [
            (f"{name}: end to end / in-process", f"{_fmt(e2e)} / {_fmt(fresh)} s", "<= 1.3",
             e2e / fresh / 1.3),
            (f"{name}: processor peak / float32 vol", f"{_fmt(proc_peak, 0)} / {_fmt(volume_mib, 0)} MiB",
             "<= 3", proc_peak / volume_mib / 3),
        ]
        rows += [(f"{name}: {s} peak growth", f"{_fmt(growth[s], 0)} MiB", f"flat <= {FLAT_MIB}",
                  growth[s] / FLAT_MIB) for s in growth]
        for label, measured, target, ratio in rows:
            met = "yes" if ratio <= 1 else "NO"
            print(f"{label:<40}{measured:>22}{target:>16}{_fmt(ratio, 2):>16}   {met}")

    # --- details ---
    if flat:
        print()
        row("", [f"{n} {k}" for n in flat for k in CLIENTS], 20)
        for label, get, scale, digits in (
            ("jobs/s under load", lambda r: r.jobs_per_s, 1, 1),
            ("latency p50 under load, ms", lambda r: r.p50, 1000, 0),
            ("latency p95 under load, ms", lambda r: r.p95, 1000, 0),
            ("POST /jobs p50 under load, ms", lambda r: r.post_p50, 1000, 0),
        ):
            row(label, [spread([get(r) for r in results[n].loads[k]], scale, digits)
                        for n in flat for k in CLIENTS], 20)
        row("failed jobs", [str(sum(r.errors for r in results[n].loads[k]))
                            for n in flat for k in CLIENTS], 20)
        print()
        row("", flat)
        row("single job latency p50 (SSE), ms", [_fmt(med(results[n].singles) * 1000) for n in flat])
        row("compute only (operations.run), ms", [_fmt(compute[n][0] * 1000) for n in flat])
        row("compute only, CPU ms", [_fmt(compute[n][1] * 1000) for n in flat])
        row("single job / compute", [f"{med(results[n].singles) / compute[n][0]:.2f}x" for n in flat])
        print("\nCPU ms per job under load (service + its child processes), median over rounds")
        row("", [f"{n} {k}" for n in flat for k in CLIENTS], 20)
        names = sorted({k for n in flat for rs in results[n].loads.values()
                        for r in rs for k in r.cpu_ms_per_job})
        for key in names:
            row(f"  {key}", [_fmt(med([r.cpu_ms_per_job.get(key, 0.0) for r in results[n].loads[k]]))
                             for n in flat for k in CLIENTS], 20)
    for name in volumes:
        c = results[name]
        print(f"\n{name}: {CT_SLICES} slices of {CT_SIZE}x{CT_SIZE}, "
              f"{next(len(sc.data) for sc in scenarios if sc.name == name) / MIB:.0f} MiB upload")
        row("  end to end, s", [spread([v.seconds for v in c.volumes], 1, 1)])
        row("  in-process (fresh process), s", [spread([f["seconds"] for f in c.fresh], 1, 1)])
        row("  in-process peak RSS, MiB", [spread([f["peak_mib"] for f in c.fresh], 1, 0)])
        for s in PYTHON_SERVICES:
            row(f"  {s} peak RSS, MiB", [spread([v.peak_mib[s] for v in c.volumes], 1, 0)])
        for s in SERVICES:
            row(f"  {s} CPU s", [spread([v.cpu_s.get(s, 0.0) for v in c.volumes], 1, 2)])
    load_after = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} CPU(s); 1-min load average {load_before:.1f} at the start, {load_after:.1f} "
          "at the end; 'others on the machine' is the CPU other processes took meanwhile")


FLAT_MIB = 64  # "flat": the chunk buffers of a stream, not the file (bench-upload: 14-44 MiB at 2 GiB)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--in-process":
        _in_process(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=200, help="2D jobs per client per round (default 200)")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="jobs in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, scenarios interleaved (default 3)")
    parser.add_argument("--single", type=int, default=10, help="one-at-a-time jobs per round (default 10)")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--compute-repeat", type=int, default=30, help="runs of operations.run to time")
    parser.add_argument("--job-timeout", type=float, default=60.0, help="seconds one 2D job may take")
    parser.add_argument("--volume-timeout", type=float, default=600.0, help="seconds the 3D job may take")
    parser.add_argument("--max-seconds", type=float, default=2400.0, help="bound on the whole run")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="record each service with py-spy (raw collapsed stacks in DIR)")
    parser.add_argument("--env", action="append", default=[], metavar="RADIOLOGY_X=value",
                        help="extra environment for the services (repeatable)")
    args = parser.parse_args()
    for name in ("n", "concurrency", "rounds", "single", "compute_repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if any("=" not in kv or not kv.startswith("RADIOLOGY_") for kv in args.env):
        parser.error("--env takes RADIOLOGY_NAME=value")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
