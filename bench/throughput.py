"""End-to-end throughput and latency of the whole platform, through the REST API and SSE.

Starts nats-server and the four services on free loopback ports (as `make run` does, data in a
temporary folder), then, for each scenario, in the same run and interleaved over several rounds:

  * load: N jobs of one file, C in flight; each is POST /jobs followed by GET /jobs/{id}/events
    until the SSE stream reports a terminal status. Reports jobs/s and the latency p50/p95
    (POST start -> terminal SSE event);
  * single: S jobs one after another on an idle platform: the latency a lone user sees;
  * compute: operations.run on the same input in this process (no services): the floor;
  * CPU: milliseconds of CPU each service (with its child processes) spent per job during load.

Scenarios: "png" (a 512x512 8-bit grayscale PNG of noise, blur) and "dicom" (pydicom's
CT_small.dcm, 128x128, blur). Everything is bounded: N, C, S and rounds by flags, every job by
--job-timeout, the whole run by --max-seconds. Only 127.0.0.1 is used.

    .venv/bin/python bench/throughput.py                  # defaults: 3 rounds x 200 jobs, 16 in flight
    .venv/bin/python bench/throughput.py -n 100 -c 8 --rounds 1 --scenarios png
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
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
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


@dataclass
class Scenario:
    name: str
    filename: str
    data: bytes
    params: dict[str, object] = field(default_factory=dict)
    task_type: str = "blur"


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "png": lambda: Scenario("png", "noise512.png", png_input()),
    "dicom": lambda: Scenario("dicom", "CT_small.dcm", dicom_input()),
}


# --- CPU accounting from /proc (a service and all its descendants) -------------------------------


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


def tree_cpu(pid: int, tree: dict[int, list[int]]) -> float:
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += _cpu_seconds(p)
        stack.extend(tree.get(p, ()))
    return total


def cpu_snapshot(platform: Platform) -> dict[str, float]:
    tree = _children()
    snap = {name: tree_cpu(proc.pid, tree) for name, proc in platform.procs.items() if name in SERVICES}
    snap["bench client"] = tree_cpu(os.getpid(), {})
    return snap


# --- one job through the API ---------------------------------------------------------------------


class JobError(Exception):
    pass


async def one_job(client: httpx.AsyncClient, sc: Scenario, timeout: float) -> tuple[float, float]:
    """(POST latency, latency to the terminal SSE event), in seconds."""
    t0 = time.perf_counter()
    async with asyncio.timeout(timeout):
        resp = await client.post(
            "/jobs",
            files=[("files", (sc.filename, sc.data))],
            data={"task_type": sc.task_type, "params": json.dumps(sc.params)},
        )
        if resp.status_code != 202:
            raise JobError(f"POST /jobs: {resp.status_code} {resp.text[:200]}")
        posted = time.perf_counter() - t0
        job_id = resp.json()["job_id"]
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


async def load(client: httpx.AsyncClient, platform: Platform, sc: Scenario, n: int, conc: int,
               timeout: float) -> LoadResult:
    sem = asyncio.Semaphore(conc)
    lat: list[float] = []
    posts: list[float] = []
    errors: list[str] = []

    async def job() -> None:
        async with sem:
            try:
                posted, done = await one_job(client, sc, timeout)
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
    return LoadResult(
        jobs_per_s=len(lat) / elapsed, p50=pct(lat, 0.5), p95=pct(lat, 0.95), post_p50=pct(posts, 0.5),
        errors=len(errors),
        cpu_ms_per_job={k: (after[k] - before.get(k, 0.0)) * 1000 / max(1, n) for k in after},
    )


async def single(client: httpx.AsyncClient, sc: Scenario, count: int, timeout: float) -> list[float]:
    out = []
    for _ in range(count):
        out.append((await one_job(client, sc, timeout))[1])
    return out


def compute_only(sc: Scenario, repeat: int) -> float:
    """Median seconds of operations.run on the input, in this process (decode, blur, encode)."""
    from services.processor import operations

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / sc.filename
        src.write_bytes(sc.data)
        out = Path(tmp) / "out"
        out.mkdir()
        operations.run(sc.task_type, dict(sc.params), str(src), str(out), "warm")
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            operations.run(sc.task_type, dict(sc.params), str(src), str(out), "x")
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Collected:
    loads: list[LoadResult] = field(default_factory=list)
    singles: list[float] = field(default_factory=list)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run(args: argparse.Namespace) -> int:
    scenarios = [SCENARIOS[name]() for name in args.scenarios]
    compute = {sc.name: compute_only(sc, args.compute_repeat) for sc in scenarios}
    results = {sc.name: Collected() for sc in scenarios}

    # One user is the whole load here: their submission rate and active-jobs limits are off.
    env = {"RADIOLOGY_LOG_LEVEL": "WARNING", "RADIOLOGY_RATE_LIMIT_PER_MINUTE": "0",
           "RADIOLOGY_MAX_ACTIVE_JOBS_PER_USER": "0", **dict(kv.split("=", 1) for kv in args.env)}
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
                    for sc in scenarios:  # warm-up: first connections, pool workers, caches
                        await load(client, platform, sc, min(args.n, 2 * args.concurrency),
                                   args.concurrency, args.job_timeout)
                    for r in range(args.rounds):
                        for sc in scenarios:
                            res = await load(client, platform, sc, args.n, args.concurrency, args.job_timeout)
                            results[sc.name].loads.append(res)
                            await asyncio.sleep(0.5)  # let the platform settle before single jobs
                            results[sc.name].singles += await single(client, sc, args.single,
                                                                     args.job_timeout)
                            print(f"  round {r + 1} {sc.name}: {res.jobs_per_s:.1f} jobs/s, "
                                  f"p50 {res.p50 * 1000:.0f} ms, p95 {res.p95 * 1000:.0f} ms",
                                  file=sys.stderr)
        finally:
            platform.stop()

    report(args, scenarios, compute, results)
    return 1 if any(r.errors for c in results.values() for r in c.loads) else 0


def report(args: argparse.Namespace, scenarios: list[Scenario], compute: dict[str, float],
           results: dict[str, Collected]) -> None:
    cols = [sc.name for sc in scenarios]
    print(f"\n{args.rounds} round(s) x {args.n} jobs, {args.concurrency} in flight, "
          f"{args.single} single jobs per round; medians over rounds (min-max)\n")

    def row(label: str, cells: list[str]) -> None:
        print(f"{label:<34}" + "".join(f"{c:>22}" for c in cells))

    def spread(values: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        if not values:
            return "-"
        m = fmt.format(med(values) * scale)
        if len(values) == 1:
            return m
        return f"{m} ({fmt.format(min(values) * scale)}-{fmt.format(max(values) * scale)})"

    row("", cols)
    row("jobs/s under load", [spread([r.jobs_per_s for r in results[c].loads]) for c in cols])
    row("latency p50 under load, ms", [spread([r.p50 for r in results[c].loads], 1000, "{:.0f}")
                                       for c in cols])
    row("latency p95 under load, ms", [spread([r.p95 for r in results[c].loads], 1000, "{:.0f}")
                                       for c in cols])
    row("POST /jobs p50 under load, ms", [spread([r.post_p50 for r in results[c].loads], 1000, "{:.0f}")
                                          for c in cols])
    row("single job latency p50, ms", [f"{med(results[c].singles) * 1000:.1f}" for c in cols])
    row("compute only (operations.run), ms", [f"{compute[c] * 1000:.1f}" for c in cols])
    row("single job / compute", [f"{med(results[c].singles) / compute[c]:.2f}x" for c in cols])
    row("failed jobs", [str(sum(r.errors for r in results[c].loads)) for c in cols])
    print("\nCPU ms per job under load (service + its child processes), median over rounds")
    names = sorted({k for c in cols for r in results[c].loads for k in r.cpu_ms_per_job})
    for name in names:
        row(f"  {name}", [f"{med([r.cpu_ms_per_job.get(name, 0.0) for r in results[c].loads]):.1f}"
                          for c in cols])
    load_avg = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} CPU(s); 1-min load average at the end {load_avg:.1f} "
          "(other work on the machine skews every figure)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=200, help="jobs per scenario per round (default 200)")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="jobs in flight (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, scenarios interleaved (default 3)")
    parser.add_argument("--single", type=int, default=10, help="one-at-a-time jobs per round (default 10)")
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=["png", "dicom"])
    parser.add_argument("--compute-repeat", type=int, default=30, help="runs of operations.run to time")
    parser.add_argument("--job-timeout", type=float, default=60.0, help="seconds one job may take")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run")
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
