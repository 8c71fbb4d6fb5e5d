"""Every answer has a documented shape that the real answers match, and every path names the
methods it answers (Allow on 405, OPTIONS)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from services.gateway import schemas
from services.gateway.routes.usage import ClientConfig, Usage
from tests.gateway.helpers import PNG, upload

ALICE = {"X-User-ID": "alice"}


async def test_each_answer_matches_its_model(client: httpx.AsyncClient) -> None:
    created = await upload(client, [("files", "a.png", PNG), ("files", "b.png", PNG)])
    assert created.status_code == 202
    job_id = created.json()["job_id"]
    assert created.headers["location"] == f"/jobs/{job_id}"
    task_id = created.json()["task_ids"][0]
    answers: list[tuple[type[BaseModel], httpx.Response]] = [
        (schemas.SubmittedJob, created),
        (schemas.Job, await client.get(f"/jobs/{job_id}", headers=ALICE)),
        (schemas.JobList, await client.get("/jobs", headers=ALICE)),
        (schemas.Task, await client.get(f"/tasks/{task_id}", headers=ALICE)),
        (schemas.OperationList, await client.get("/operations")),
        (schemas.Health, await client.get("/healthz")),
        (schemas.Ready, await client.get("/readyz")),
        (Usage, await client.get("/usage", headers=ALICE)),
        (ClientConfig, await client.get("/config")),
        (schemas.Job, await client.post(f"/jobs/{job_id}/cancel", headers=ALICE)),
    ]
    for model, resp in answers:
        assert resp.status_code in (200, 202), (model, resp.text)
        body = resp.json()
        model.model_validate(body)
        # No field the model does not describe (the document would not tell clients about it).
        assert set(body) <= set(model.model_fields), (model, set(body) - set(model.model_fields))


async def test_every_success_answer_is_documented_with_a_schema(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            ok = {s: r for s, r in operation["responses"].items() if s[0] == "2"}
            assert ok, (method, path)
            for status, response in ok.items():
                if status == "204":
                    continue
                content = response["content"]
                schema = next(iter(content.values())).get("schema", {})
                assert schema and schema != {}, (method, path, status)
    upload_doc = spec["paths"]["/jobs"]["post"]
    assert {"200", "202"} <= set(upload_doc["responses"])
    assert "Location" in upload_doc["responses"]["202"]["headers"]
    assert "Idempotent-Replayed" in upload_doc["responses"]["200"]["headers"]
    key = next(p for p in upload_doc["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["schema"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"
    assert "outcome_unknown" in upload_doc["responses"]["503"]["description"]
    assert "invalid_idempotency_key" in upload_doc["responses"]["400"]["description"]
    job = spec["components"]["schemas"]["Job"]
    assert {"job_id", "status", "task_results", "progress"} <= set(job["required"])


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/jobs", "GET, HEAD, POST, OPTIONS"),
        ("/jobs/6f1c2d9e-0000-4000-8000-000000000000", "GET, HEAD, DELETE, OPTIONS"),
        ("/jobs/x/cancel", "POST, OPTIONS"),
        ("/jobs/x/events", "GET, HEAD, OPTIONS"),
        ("/files/alice/x/a.png", "GET, HEAD, OPTIONS"),
        ("/tasks/x", "GET, HEAD, OPTIONS"),
        ("/operations", "GET, HEAD, OPTIONS"),
        ("/usage", "GET, HEAD, OPTIONS"),
    ],
)
async def test_allow_names_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    options = await client.options(path)
    assert options.status_code == 204 and options.headers["allow"] == allowed
    unused = next(m for m in ("PATCH", "PUT", "DELETE", "POST", "GET") if m not in allowed.split(", "))
    refused = await client.request(unused, path, headers=ALICE)
    assert refused.status_code == 405, (unused, path, refused.text)
    assert refused.headers["allow"] == allowed
    assert refused.json() == {"detail": "Method Not Allowed", "code": "method_not_allowed"}


async def test_a_browser_preflight_is_still_answered_by_cors(client: httpx.AsyncClient) -> None:
    resp = await client.options("/jobs", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
    })
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "http://localhost:3000"
