"""Where a service's CPU goes, from py-spy's collapsed stacks (`throughput.py --py-spy DIR` writes
one `<service>.txt` per service; `py-spy record --format raw` makes the same).

Each sample is charged to the innermost frame that tells where the work is: our own code
(services.*) only when it is the leaf, otherwise the library whose code (or native library) runs.
It prints, per service, the share of samples by library, and the share of samples under each of
our own functions that appear in the stacks (inclusive), the biggest first.

    .venv/bin/python bench/profile_summary.py DIR [--top 15] [--per-job N]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# Library of a frame, from its file path or native library name; first match wins.
_LIBRARIES = [
    ("grpc", r"grpc|cygrpc|libgrpc"),
    ("nats", r"/nats/"),
    ("sqlalchemy", r"sqlalchemy"),
    ("sqlite", r"sqlite"),
    ("protobuf", r"protobuf|_message|upb"),
    ("json", r"/json/|_json|orjson"),
    ("fastapi/starlette/pydantic", r"fastapi|starlette|pydantic"),
    ("uvicorn/httptools/uvloop", r"uvicorn|httptools|uvloop"),
    ("multipart", r"multipart"),
    ("asyncio", r"asyncio|_asyncio|selectors"),
    ("logging", r"/logging/"),
    ("prometheus", r"prometheus"),
    ("opentelemetry", r"opentelemetry"),
    ("numpy/scipy", r"numpy|scipy|_multiarray|libopenblas"),
    ("imaging libs", r"PIL|imagecodecs|pydicom|nibabel|zlib|libz|libdeflate|libpng"),
    ("hashlib/ssl", r"hashlib|libcrypto|_hashlib"),
    ("threads/queues", r"threading|concurrent|queue|multiprocessing"),
    ("kernel/libc", r"libc\.so|libpthread|ld-linux|vdso"),
    ("python runtime", r"python3|libpython|<frozen|site-packages/typing|/typing\.py|abc\.py|functools|"
                       r"contextlib|dataclasses|enum\.py|uuid\.py|copy\.py|pathlib|os\.py|tempfile|shutil"),
]
# A thread waiting (for I/O, a lock, the GIL, a sleep) is sampled too with --native: such samples
# are not CPU and are left out, recognised by the wait call in the innermost frames.
_WAITS = {
    "epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect", "clock_nanosleep", "nanosleep",
    "PyThread_acquire_lock_timed", "pthread_cond_timedwait", "pthread_cond_wait", "sem_wait",
    "sem_timedwait", "take_gil", "_queue_SimpleQueue_get_impl", "fsync", "fdatasync", "os_fsync",
    "os_read", "sock_recv", "wait",
}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*)\)$")


def library(where: str) -> str:
    if where.startswith("services/") or "/services/" in where:
        return "our code (self)"
    for name, pattern in _LIBRARIES:
        if re.search(pattern, where):
            return name
    return "other"


def waiting(frames: list[tuple[str, str]]) -> bool:
    return any(func in _WAITS for func, _ in frames[-4:])


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            frames.append((m["func"], m["where"]) if m else (frame, ""))
        stacks.append((frames, int(count)))
    return stacks


def summarise(path: Path, top: int, per_job: int | None, rate: int) -> None:
    stacks = parse(path)
    total = sum(n for _, n in stacks)
    if not total:
        print(f"{path.stem}: no samples")
        return
    waits = sum(n for frames, n in stacks if waiting(frames))
    stacks = [(frames, n) for frames, n in stacks if not waiting(frames)]
    total -= waits
    by_lib: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, n in stacks:
        leaf = next((w for _, w in reversed(frames) if w), "")
        by_lib[library(leaf)] += n
        seen = set()
        for func, where in frames:
            if where.startswith("services/") or "/services/" in where:
                short = where.split("services/", 1)[1].split(":")[0]
                key = f"{short}:{func}"
                if key not in seen:
                    seen.add(key)
                    ours[key] += n
    unit = f"{total / rate:.1f} s CPU" + (f", {total / rate * 1000 / per_job:.1f} ms/job" if per_job else "")
    print(f"\n== {path.stem}: {total} samples ({unit}; {waits} samples of waiting threads left out)")
    print("  by library (self time):")
    for name, n in by_lib.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {name}")
    print("  our functions (inclusive):")
    for name, n in ours.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--per-job", type=int, default=None, help="jobs run while recording")
    parser.add_argument("--rate", type=int, default=100, help="py-spy's samples per second (100)")
    args = parser.parse_args()
    for path in sorted(args.folder.glob("*.txt")):
        summarise(path, args.top, args.per_job, args.rate)


if __name__ == "__main__":
    main()
