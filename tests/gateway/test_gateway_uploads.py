"""POST /jobs: streaming upload, sniffing, safe names, limits, params; nothing stored on failure."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable

import httpx
import pytest

from services.common import sniff
from services.common.config import Settings
from services.common.protobuf import from_struct
from tests.gateway import catalogue_fixture
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import JPEG, PNG, gateway_client, multipart, upload

ALICE = {"X-User-ID": "alice"}

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
DICOM = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + b"\x00" * 200


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == code
    assert body["detail"] and "Traceback" not in body["detail"]
    return body


async def test_upload_several_files_returns_202_and_stores_them(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    big_png = PNG + bytes(3 * 1024 * 1024 + 17)  # spans several 1 MiB Put chunks
    resp = await upload(
        client,
        [
            ("task_type", None, b"blur"),
            ("files", "scan.png", big_png),
            ("files", "scan.png", PNG),
            ("files", "photo.jpg", JPEG),
            ("files", "ct", DICOM),
            ("params", None, b'{"sigma": 2.5}'),
        ],
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert set(body) == {"job_id", "user_id", "status", "task_ids", "created_at"}
    assert body["user_id"] == "alice" and body["status"] == "PENDING"
    assert len(body["task_ids"]) == 4
    assert ISO.match(body["created_at"])
    assert resp.headers["location"] == f"/jobs/{body['job_id']}"

    job_id = body["job_id"]
    prefix = f"alice/{job_id}/"
    assert sorted(fakes.storage.objects) == sorted(
        prefix + n for n in ("scan.png", "scan-1.png", "photo.jpg", "ct")
    )
    assert fakes.storage.objects[prefix + "scan.png"].data == big_png
    assert fakes.storage.objects[prefix + "scan-1.png"].data == PNG
    assert fakes.storage.objects[prefix + "photo.jpg"].content_type == "image/jpeg"
    assert fakes.storage.objects[prefix + "ct"].content_type == "application/dicom"

    (created,) = fakes.jobs.created
    assert created.job_id == job_id and created.user_id == "alice" and created.task_type == "blur"
    assert [(i.filename, i.key, i.format, i.size) for i in created.inputs] == [
        ("scan.png", prefix + "scan.png", "png", len(big_png)),
        ("scan-1.png", prefix + "scan-1.png", "png", len(PNG)),
        ("photo.jpg", prefix + "photo.jpg", "jpeg", len(JPEG)),
        ("ct", prefix + "ct", "dicom", len(DICOM)),
    ]
    assert from_struct(created.params) == {**catalogue_fixture.defaults("blur"), "sigma": 2.5}


async def test_defaults_to_blur_with_validated_default_params(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    resp = await upload(client, [("files", "a.png", PNG)])
    assert resp.status_code == 202
    (created,) = fakes.jobs.created
    assert created.task_type == "blur"
    assert from_struct(created.params) == catalogue_fixture.defaults("blur")


async def test_hostile_file_name_is_reduced_to_a_safe_base_name(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    resp = await upload(
        client, [("files", "../../etc/passwd\x00.png", PNG), ("files", "..\\..\\win.png", PNG)]
    )
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    assert sorted(fakes.storage.objects) == [f"alice/{job_id}/passwd.png", f"alice/{job_id}/win.png"]


async def test_missing_identity_is_401(client: httpx.AsyncClient, fakes: Fakes) -> None:
    assert_error(await upload(client, [("files", "a.png", PNG)], user=None), 401, "missing_identity")
    assert fakes.storage.objects == {} and fakes.storage.puts_started == 0


async def test_empty_file_is_415(client: httpx.AsyncClient, fakes: Fakes) -> None:
    body = assert_error(await upload(client, [("files", "empty.png", b"")]), 415, "unsupported_file")
    assert "empty.png" in body["detail"]
    assert fakes.storage.objects == {}


async def test_text_named_png_is_415(client: httpx.AsyncClient, fakes: Fakes) -> None:
    resp = await upload(client, [("files", "notes.png", b"hello, I am plain text\n" * 10)])
    body = assert_error(resp, 415, "unsupported_file")
    assert "notes.png" in body["detail"] and f"accepted are {sniff.ACCEPTED}" in body["detail"]
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_good_then_junk_is_415_naming_junk_and_nothing_stays(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    resp = await upload(
        client, [("files", "good.png", PNG + bytes(200_000)), ("files", "junk.png", b"GIF89a" * 50)]
    )
    body = assert_error(resp, 415, "unsupported_file")
    assert "junk.png" in body["detail"] and "good.png" not in body["detail"]
    assert fakes.storage.puts_started == 1  # the good one was stored ... and removed again
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_unknown_task_type_is_422(client: httpx.AsyncClient, fakes: Fakes) -> None:
    for parts in (
        [("task_type", None, b"sharpen"), ("files", "a.png", PNG)],
        [("files", "a.png", PNG), ("task_type", None, b"sharpen")],
    ):
        body = assert_error(await upload(client, parts), 422, "unknown_task_type")
        assert "sharpen" in body["detail"]
        assert fakes.storage.objects == {}
    assert fakes.jobs.created == []


async def test_a_file_the_operation_does_not_accept_is_422_and_nothing_stays(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    """reorient takes volumes (DICOM, NIfTI, DICOM series): a PNG is refused before any job exists."""
    body = assert_error(
        await upload(client, [("task_type", None, b"reorient"), ("files", "photo.png", PNG)]),
        422, "input_not_accepted",
    )
    assert "photo.png" in body["detail"] and "PNG" in body["detail"] and "NIfTI" in body["detail"]
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_a_2d_dicom_for_an_operation_on_volumes_is_422_and_nothing_stays(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    """mip takes volumes: a DICOM whose headers say it is one 2D image (Inspect's kind) is refused
    at submission, naming the file, rather than failing as a task later."""
    fakes.processor.inspections["slice.dcm"] = {"format": "dicom", "kind": "2d", "shape": [512, 512]}
    body = assert_error(
        await upload(client, [("task_type", None, b"mip"), ("files", "slice.dcm", DICOM)]),
        422, "input_not_accepted",
    )
    assert "slice.dcm" in body["detail"] and "2D image" in body["detail"] and "3D volume" in body["detail"]
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_kinds_are_read_only_where_an_operation_refuses_one(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    """A volume DICOM for mip is accepted; a ZIP is asked once (its kind, then its series); blur takes
    both kinds, so nothing is asked of a DICOM; without an answer the task decides."""
    fakes.processor.inspections["ct.dcm"] = {"format": "dicom", "kind": "volume"}
    fakes.processor.inspections["exam.zip"] = {"format": "zip", "kind": "volume", "series_count": 1}
    resp = await upload(client, [("task_type", None, b"mip"), ("files", "ct.dcm", DICOM),
                                 ("files", "exam.zip", _zip_of_dicom())])
    assert resp.status_code == 202, resp.text
    keys = [i.key for i in fakes.jobs.created[-1].inputs]
    assert fakes.processor.inspected == keys  # each asked once
    fakes.processor.inspected.clear()
    resp = await upload(client, [("task_type", None, b"blur"), ("files", "ct.dcm", DICOM)])
    assert resp.status_code == 202, resp.text
    assert fakes.processor.inspected == []
    resp = await upload(client, [("task_type", None, b"reorient"), ("files", "unread.dcm", DICOM)])
    assert resp.status_code == 202, resp.text  # Inspect could not read it: the task will say why
    # several series: Inspect's kind is the largest one's, so each series' task judges its own
    fakes.processor.inspections["two.zip"] = {
        "format": "zip", "kind": "2d", "series_count": 2,
        "series": [{"series_instance_uid": f"1.2.3.{k}", "slices": 1} for k in (1, 2)],
    }
    resp = await upload(client, [("task_type", None, b"mip"), ("files", "two.zip", _zip_of_dicom())])
    assert resp.status_code == 202, resp.text
    assert len(fakes.jobs.created[-1].inputs[0].series) == 2


def _zip_of_dicom() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.dcm", DICOM)
    return buf.getvalue()


async def test_params_failing_the_schema_is_422_with_service_message(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    resp = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"sigma": -3}')])
    body = assert_error(resp, 422, "invalid_params")
    assert body["detail"] == fakes.processor.refusals[-1] and "sigma" in body["detail"]
    resp = await upload(client, [("files", "a.png", PNG), ("params", None, b'{"radius": 3}')])
    assert "radius" in assert_error(resp, 422, "invalid_params")["detail"]
    assert fakes.storage.objects == {} and fakes.jobs.created == []


@pytest.mark.parametrize("params", [b"{sigma: 2", b"[1, 2]", b'"blur"', b"\xff\xfe"])
async def test_params_not_a_json_object_is_422(
    client: httpx.AsyncClient, fakes: Fakes, params: bytes
) -> None:
    assert_error(
        await upload(client, [("files", "a.png", PNG), ("params", None, params)]), 422, "invalid_params"
    )
    assert fakes.storage.objects == {}


async def test_a_number_with_thousands_of_digits_is_refused_in_plain_words(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    params = b'{"sigma": ' + b"9" * 5000 + b"}"
    body = assert_error(
        await upload(client, [("files", "a.png", PNG), ("params", None, params)]), 422, "invalid_params"
    )
    assert "5000 digits" in body["detail"] and "sys." not in body["detail"]
    assert fakes.storage.objects == {}


async def test_no_files_is_400(client: httpx.AsyncClient, fakes: Fakes) -> None:
    assert_error(await upload(client, [("task_type", None, b"blur")]), 400, "no_files")
    resp = await client.post("/jobs", json={"files": []}, headers={"X-User-ID": "alice"})
    assert_error(resp, 400, "expected_multipart")
    assert fakes.jobs.created == []


async def test_truncated_body_is_400_and_nothing_stays(client: httpx.AsyncClient, fakes: Fakes) -> None:
    resp = await client.post(
        "/jobs",
        content=b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + PNG,
        headers={"X-User-ID": "alice", "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_error(resp, 400, "malformed_multipart")
    assert fakes.storage.objects == {}
    for ctype in (f"multipart/form-data; boundary={'b' * 100}", "multipart/form-data; boundary=zz"):
        resp = await client.post(
            "/jobs", content=b"--b\r\nnonsense", headers={"X-User-ID": "alice", "Content-Type": ctype}
        )
        assert_error(resp, 400, "malformed_multipart")


async def test_too_many_files_is_413(make_settings: Callable[..., Settings], fakes: Fakes) -> None:
    async with gateway_client(make_settings(max_files_per_job=2)) as client:
        resp = await upload(client, [("files", f"{i}.png", PNG) for i in range(3)])
    assert_error(resp, 413, "too_many_files")
    assert fakes.storage.puts_started == 2 and fakes.storage.objects == {}


async def test_file_too_large_is_413(make_settings: Callable[..., Settings], fakes: Fakes) -> None:
    async with gateway_client(make_settings(max_file_bytes=100_000)) as client:
        ok = await upload(client, [("files", "small.png", PNG)])
        assert ok.status_code == 202
        fakes.reset()
        resp = await upload(client, [("files", "small.png", PNG), ("files", "big.png", PNG + bytes(100_000))])
    assert "big.png" in assert_error(resp, 413, "file_too_large")["detail"]
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_job_too_large_is_413(make_settings: Callable[..., Settings], fakes: Fakes) -> None:
    async with gateway_client(make_settings(max_job_bytes=150_000)) as client:
        resp = await upload(client, [("files", f"{i}.png", PNG + bytes(60_000)) for i in range(3)])
        assert_error(resp, 413, "job_too_large")
        assert fakes.storage.objects == {}
        # A declared Content-Length beyond the limit is refused before anything is read or stored.
        huge = await client.post(
            "/jobs",
            content=b"x" * 300_000,
            headers={"X-User-ID": "alice", "Content-Type": "multipart/form-data; boundary=b"},
        )
    assert_error(huge, 413, "job_too_large")
    assert fakes.storage.puts_started == 2  # only from the first request


async def test_storage_refusing_max_size_is_413(client: httpx.AsyncClient, fakes: Fakes) -> None:
    """Storage's own max_size guard (RESOURCE_EXHAUSTED) also becomes 413, with nothing left."""
    fakes.storage.force_max_size = 2000
    resp = await upload(client, [("files", "a.png", PNG), ("files", "b.png", PNG + bytes(5000))])
    assert "b.png" in assert_error(resp, 413, "file_too_large")["detail"]
    assert fakes.storage.objects == {} and fakes.jobs.created == []


async def test_a_preamble_before_the_first_boundary_is_ignored(client: httpx.AsyncClient) -> None:
    body, ctype = multipart([("files", "a.png", PNG)])
    for preamble in (b"This is a multi-part message in MIME format.\r\n", b"\r\n", b"x" * 5000 + b"\r\n"):
        r = await client.post("/jobs", content=preamble + body, headers={"Content-Type": ctype, **ALICE})
        assert r.status_code == 202, r.text
    # The boundary split across chunks of the body is found too.
    whole = b"junk before\r\n" + body

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(whole), 7):
            yield whole[i : i + 7]

    r = await client.post("/jobs", content=chunks(), headers={"Content-Type": ctype, **ALICE})
    assert r.status_code == 202, r.text
    # A body that never reaches a boundary is refused without reading it all.
    r = await client.post("/jobs", content=b"y" * 200_000, headers={"Content-Type": ctype, **ALICE})
    assert r.status_code == 400 and r.json()["code"] == "malformed_multipart"
    assert "boundary" in r.json()["detail"]
