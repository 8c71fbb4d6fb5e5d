"""A ZIP input with its series listed becomes one task per series: each task carries the series'
UID to the processor, output stems stay unique, and bad series lists are refused."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from services.common.gen.radiology.v1 import jobs_pb2
from services.common.keys import output_names, series_name
from services.jobs.models import NewInput
from services.jobs.rules import MAX_SERIES_PER_INPUT, new_job
from tests.jobs.test_service import create_request, stream_tasks

NOW = datetime(2025, 1, 1, tzinfo=UTC)
JOB_ID = "6f1c2a8e-4b7d-4c11-9a35-0d2e8f4b7a10"


def test_series_names_are_safe_words() -> None:
    assert series_name("s3 T1 AX/post-contrast", 0) == "s3_T1_AX_post-contrast"
    assert series_name("  ", 4) == "series5"
    assert len(series_name("x" * 100, 0)) == 40


def test_new_job_makes_one_task_per_listed_series_with_unique_stems() -> None:
    inputs = [
        NewInput(
            "exam.zip",
            f"alice/{JOB_ID}/exam.zip",
            "zip",
            10,
            (("1.2.3.1", "s2 T1"), ("1.2.3.2", "s3 T2"), ("1.2.3.3", "s3 T2")),
        ),
        NewInput("exam_s2_T1.dcm", f"alice/{JOB_ID}/exam_s2_T1.dcm", "dicom", 10),
    ]
    job = new_job(job_id=JOB_ID, user_id="alice", task_type="blur", params={}, inputs=inputs, now=NOW)
    assert [(t.input_file, t.series_uid) for t in job.tasks] == [
        ("exam.zip", "1.2.3.1"),
        ("exam.zip", "1.2.3.2"),
        ("exam.zip", "1.2.3.3"),
        ("exam_s2_T1.dcm", ""),
    ]
    stems = [t.output_stem for t in job.tasks]
    assert stems[:3] == ["exam_s2_T1", "exam_s3_T2", "exam_s3_T2_2"]
    every_output = [name.casefold() for stem in stems for name in output_names(stem)]
    assert len(set(every_output)) == len(every_output)  # no two tasks write the same file
    assert not {"exam.zip", "exam_s2_t1.dcm"} & set(every_output)


async def test_create_job_publishes_each_series_task_with_its_uid(jobs) -> None:
    req = create_request("alice", "exam.zip", "b.png")
    req.inputs[0].format = "zip"
    req.inputs[0].series.extend(
        [
            jobs_pb2.InputSeries(series_instance_uid="1.2.840.1", name="s1 localizer"),
            jobs_pb2.InputSeries(series_instance_uid="1.2.840.2", name="s2 axial"),
        ]
    )
    job = await jobs.stub.CreateJob(req)
    assert [(t.input_file, t.series_instance_uid) for t in job.tasks] == [
        ("exam.zip", "1.2.840.1"),
        ("exam.zip", "1.2.840.2"),
        ("b.png", ""),
    ]
    messages = {m.task_id: m for _, m in await stream_tasks(jobs, job.job_id)}
    for task in job.tasks:
        assert messages[task.task_id].series_instance_uid == task.series_instance_uid
        assert messages[task.task_id].input_key == task.input_key
    assert [messages[t.task_id].output_stem for t in job.tasks] == ["exam_s1_localizer", "exam_s2_axial", "b"]
    again = await jobs.stub.GetJob(jobs_pb2.GetJobRequest(user_id="alice", job_id=job.job_id))
    assert [t.series_instance_uid for t in again.tasks] == ["1.2.840.1", "1.2.840.2", ""]  # stored


@pytest.mark.parametrize(
    "uids",
    [
        ["1.2", "1.2"],  # twice
        ["1.2", ""],  # empty
        ["1.2", "x" * 65],  # too long
        ["1.2", "1.2\n3"],  # not printable
        [f"1.{n}" for n in range(MAX_SERIES_PER_INPUT + 1)],
    ],
)
async def test_bad_series_lists_are_refused(jobs, uids: list[str]) -> None:
    req = create_request("alice", "exam.zip")
    req.inputs[0].series.extend(jobs_pb2.InputSeries(series_instance_uid=u) for u in uids)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.stub.CreateJob(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exam.zip" in info.value.details()
