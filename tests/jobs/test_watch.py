"""WatchJob mailboxes: snapshots of local commits, re-reads for remote ones, never backwards."""

from __future__ import annotations

from services.common.gen.radiology.v1 import common_pb2 as S
from services.jobs.watch import Watcher, job_rank


def job(*tasks: tuple[int, int], progress: int = 0) -> S.Job:
    return S.Job(job_id="j", progress=progress,
                 tasks=[S.Task(task_id=f"t{i}", status=st, progress=p) for i, (st, p) in enumerate(tasks)])


def test_every_change_raises_the_rank() -> None:
    states = [
        job((S.STATUS_PENDING, 0), (S.STATUS_PENDING, 0)),
        job((S.STATUS_RUNNING, 0), (S.STATUS_PENDING, 0)),  # started, no progress yet
        job((S.STATUS_RUNNING, 10), (S.STATUS_PENDING, 0), progress=5),
        job((S.STATUS_RUNNING, 10), (S.STATUS_CANCELLED, 0), progress=55),  # cancelled at 0
        job((S.STATUS_SUCCESS, 100), (S.STATUS_CANCELLED, 0), progress=100),
    ]
    ranks = [job_rank(s) for s in states]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


async def test_watcher_keeps_the_newest_snapshot_and_a_reread_wins() -> None:
    w = Watcher()
    assert await w.next(0.01) is None  # nothing arrived: the safety-net re-read
    new, old = job((S.STATUS_RUNNING, 70)), job((S.STATUS_RUNNING, 40))
    w.offer(new, job_rank(new))
    w.offer(old, job_rank(old))  # published late: ignored
    assert await w.next(0.01) is new
    w.offer(old, job_rank(old))
    w.request_reread()
    assert await w.next(0.01) is None
