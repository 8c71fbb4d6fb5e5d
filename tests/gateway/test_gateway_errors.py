"""One mapping from a backing service's gRPC status to the HTTP answer: whichever route and call
failed, a gRPC status gives the same HTTP status (a call may only give it a more precise code)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import grpc
import httpx
import pytest

from services.common.logging import JsonFormatter
from tests.gateway.fakes import Fakes
from tests.gateway.helpers import PNG, upload

ALICE = {"X-User-ID": "alice"}
S = grpc.StatusCode

# The rule, written out independently of the gateway's table.
HTTP_STATUS = {
    **dict.fromkeys([S.NOT_FOUND, S.PERMISSION_DENIED], (404, "not_found")),
    S.INVALID_ARGUMENT: (422, "invalid_parameters"),
    S.RESOURCE_EXHAUSTED: (413, "too_large"),
    **dict.fromkeys([S.ALREADY_EXISTS, S.FAILED_PRECONDITION], (409, "conflict")),
    **dict.fromkeys([S.UNAVAILABLE, S.DEADLINE_EXCEEDED], (503, "service_unavailable")),
    **dict.fromkeys([S.INTERNAL, S.UNKNOWN, S.OUT_OF_RANGE, S.DATA_LOSS], (502, "backend_error")),
}
# Where a call's answer means something more precise: same status, its own code.
PRECISE = {
    ("ValidateParams", S.INVALID_ARGUMENT): "invalid_params",
    ("Put", S.RESOURCE_EXHAUSTED): "file_too_large",
    # The job may have been committed: its files stay, and the client retries with its key.
    ("CreateJob", S.UNAVAILABLE): "outcome_unknown",
    ("CreateJob", S.DEADLINE_EXCEEDED): "outcome_unknown",
}

Request = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[httpx.Response]]


def _get(path: str, **headers: str) -> Request:
    return lambda c, ids: c.get(path.format(**ids), headers={**ALICE, **headers})


# (service, method): a request that calls it, given the ids of an existing job of alice's.
CALLS: dict[tuple[str, str], Request] = {
    ("jobs", "GetJob"): _get("/jobs/{job}"),
    ("jobs", "ListJobs"): _get("/jobs"),
    ("jobs", "GetTask"): _get("/tasks/{task}"),
    ("jobs", "WatchJob"): _get("/jobs/{job}/events"),
    ("jobs", "CancelJob"): lambda c, ids: c.post(f"/jobs/{ids['job']}/cancel", headers=ALICE),
    ("jobs", "DeleteJob"): lambda c, ids: c.delete(f"/jobs/{ids['job']}", headers=ALICE),
    ("jobs", "CreateJob"): lambda c, ids: upload(c, [("files", "new.png", PNG)]),
    ("jobs", "AdmitSubmission"): lambda c, ids: upload(c, [("files", "new.png", PNG)]),
    ("jobs", "GetUsage"): _get("/usage"),
    # Params not validated before (validations are remembered for a few seconds).
    ("processor", "ValidateParams"): lambda c, ids: upload(
        c, [("files", "new.png", PNG), ("params", None, b'{"sigma": 3}')]
    ),
    ("processor", "ListOperations"): _get("/operations"),
    ("storage", "Put"): lambda c, ids: upload(c, [("files", "new.png", PNG)]),
    ("storage", "Get"): _get("/files/alice/{job}/scan.png"),
    ("storage", "Stat"): _get("/files/alice/{job}/scan.png", Range="bytes=0-1"),
}


@pytest.mark.parametrize("code", list(HTTP_STATUS), ids=lambda c: c.name)
@pytest.mark.parametrize("call", list(CALLS), ids=lambda c: f"{c[0]}.{c[1]}")
async def test_a_grpc_status_is_one_http_status_on_every_route(
    client: httpx.AsyncClient, fakes: Fakes, call: tuple[str, str], code: grpc.StatusCode
) -> None:
    service, method = call
    ids = {}
    if method != "ListOperations":  # an upload would fill the catalogue cache that it reads
        created = await upload(client, [("files", "scan.png", PNG)])
        assert created.status_code == 202, created.text
        ids = {"job": created.json()["job_id"], "task": created.json()["task_ids"][0]}
    stored = set(fakes.storage.objects)
    getattr(fakes, service).fail[method] = code

    resp = await CALLS[call](client, ids)

    status, default_code = HTTP_STATUS[code]
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == PRECISE.get((method, code), default_code)
    unknown = resp.json()["code"] == "outcome_unknown"
    if status == 503:
        assert resp.headers["retry-after"] == ("2" if unknown else "1")
        assert f"The {service} service" in resp.json()["detail"]
    if status == 404:
        assert resp.json() == {"detail": "Not found", "code": "not_found"}
    if status == 502:  # the service's own words may be anything: not passed on
        assert "as the test asked" not in resp.json()["detail"]
    if unknown:  # kept for the job that may exist (the janitor removes them if it does not)
        assert len(set(fakes.storage.objects) - stored) == 1
    else:
        assert set(fakes.storage.objects) <= stored  # a refused upload leaves nothing


async def test_a_refused_put_names_the_file(client: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.storage.fail["Put"] = S.RESOURCE_EXHAUSTED
    resp = await upload(client, [("files", "../big scan.png", PNG)])
    assert resp.status_code == 413
    assert resp.json() == {
        "detail": "'../big scan.png' is larger than storage accepts.",
        "code": "file_too_large",
    }


async def test_an_unexpected_failure_is_logged_with_the_job_id(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    job_id = (await upload(client, [("files", "scan.png", PNG)])).json()["job_id"]
    fakes.jobs.fail["GetJob"] = S.DATA_LOSS
    lines: list[dict] = []

    class Collect(logging.Handler):  # formats as it logs: the ids are read from the request's context
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    handler = Collect(logging.ERROR)
    logging.getLogger("services.gateway").addHandler(handler)
    try:
        assert (await client.get(f"/jobs/{job_id}", headers=ALICE)).status_code == 502
    finally:
        logging.getLogger("services.gateway").removeHandler(handler)
    (line,) = lines
    assert line["job_id"] == job_id and "GetJob" in line["message"] and "DATA_LOSS" in line["message"]
