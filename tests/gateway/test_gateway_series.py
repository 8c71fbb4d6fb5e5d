"""POST /jobs with a ZIP of several DICOM series: the gateway lists them through
ProcessorService.Inspect and asks for one task per series; without an answer the ZIP stays one
task, and the job is still created."""

from __future__ import annotations

import io
import zipfile

import httpx

from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, upload

TWO_SERIES = {
    "format": "zip",
    "series_count": 2,
    "series": [
        {
            "index": 0,
            "series_instance_uid": "1.2.840.10.1",
            "series_number": 2,
            "series_description": "T1 AX",
            "slices": 20,
        },
        {"index": 1, "series_instance_uid": "1.2.840.10.2", "series_number": 5, "slices": 12},
    ],
}


def a_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.dcm", b"\0" * 128 + b"DICM")
    return buf.getvalue()


async def test_a_zip_with_two_series_asks_for_a_task_per_series(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.processor.inspections["exam.zip"] = TWO_SERIES
    response = await upload(client, [("files", "exam.zip", a_zip()), ("files", "p.png", PNG)])
    assert response.status_code == 202, response.text
    (request,) = fakes.jobs.created
    exam, photo = request.inputs
    assert [(s.series_instance_uid, s.name) for s in exam.series] == [
        ("1.2.840.10.1", "s2 T1 AX"),
        ("1.2.840.10.2", "s5"),
    ]
    assert list(photo.series) == [] and fakes.processor.inspected == [exam.key]  # only ZIPs are asked


async def test_a_zip_stays_one_task_when_its_series_cannot_be_listed(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.processor.inspections["one.zip"] = {"format": "zip", "series_count": 1}
    fakes.processor.inspections["bad.zip"] = {**TWO_SERIES, "series": [{"series_instance_uid": ""}] * 2}
    response = await upload(client, [("files", n, a_zip()) for n in ("one.zip", "bad.zip", "unreadable.zip")])
    assert response.status_code == 202, response.text
    assert all(list(i.series) == [] for i in fakes.jobs.created[0].inputs)


async def test_no_processor_no_series_but_the_job_is_accepted(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    first = await upload(client, [("files", "exam.zip", a_zip())])  # params validated while up
    assert first.status_code == 202
    fakes.processor.inspections["exam.zip"] = TWO_SERIES
    fakes.processor.down = True
    response = await upload(client, [("files", "exam.zip", a_zip())])
    assert response.status_code == 202, response.text
    assert list(fakes.jobs.created[-1].inputs[0].series) == []
