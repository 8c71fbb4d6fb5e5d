"""One task per series of a ZIP (docs/design.md, Imaging: Series): before the job is created, the
gateway asks ProcessorService.Inspect which series a stored ZIP of DICOM files holds, and lists them
in its JobInput; the jobs service then makes a task of each. Without an answer (no processor reachable, a
ZIP it cannot read) the ZIP stays one task: the processor reads its largest series and names the
others in the result's warnings, or fails the task with the reason it cannot read it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from services.common.gen.radiology.v1 import jobs_pb2
from services.gateway.clients import ProcessorClient
from services.gateway.errors import ApiError

log = logging.getLogger(__name__)

MAX_SERIES = 1000  # the jobs service's limit per input
MAX_UID_CHARS = 64


def series_words(series: dict[str, Any], index: int) -> str:
    """Words naming a series in its outputs: its number and description ("s3 T1 axial")."""
    words = []
    if series.get("series_number") is not None:
        words.append(f"s{series['series_number']}")
    if series.get("series_description"):
        words.append(str(series["series_description"]))
    return " ".join(words) or f"series{index + 1}"


def listed_series(metadata: dict[str, Any]) -> list[jobs_pb2.InputSeries]:
    """The series Inspect lists for a ZIP, when there are several that can each be a task."""
    series = metadata.get("series") or []
    if not 1 < len(series) <= MAX_SERIES:
        return []
    listed = []
    for index, entry in enumerate(series):
        uid = str(entry.get("series_instance_uid") or "")
        if not 0 < len(uid) <= MAX_UID_CHARS or not uid.isascii() or not uid.isprintable() or " " in uid:
            return []  # a series without a usable UID cannot be picked out: the ZIP stays one task
        listed.append(jobs_pb2.InputSeries(series_instance_uid=uid, name=series_words(entry, index)))
    if len({s.series_instance_uid for s in listed}) != len(listed):
        return []
    return listed


async def add_series(
    processor: ProcessorClient,
    inputs: Iterable[jobs_pb2.JobInput],
    inspected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """List the series of every ZIP input that holds several (in place). ``inspected``: what
    Inspect already said of some files, by key (they are not asked again)."""
    for job_input in inputs:
        if job_input.format != "zip":
            continue
        metadata = (inspected or {}).get(job_input.key)
        if metadata is None:
            try:
                _, metadata = await processor.inspect(job_input.key)
            except ApiError as exc:
                log.warning("no series listed for %s (%s): it stays one task", job_input.filename, exc.detail)
                continue
        job_input.series.extend(listed_series(metadata))
