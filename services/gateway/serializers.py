"""Job and task messages as the JSON the REST API returns (README.md, "Using the API")."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from services.common.gen.radiology.v1 import common_pb2
from services.common.protobuf import from_struct_plain, iso
from services.common.status import status_name
from services.gateway.signing import UrlSigner


def _ts(msg: Any, field: str) -> str | None:
    return iso(getattr(msg, field), msg.HasField(field))


def task_json(task: common_pb2.Task, signer: UrlSigner) -> dict[str, Any]:
    result = None
    if task.status == common_pb2.STATUS_SUCCESS and task.HasField("result"):
        r = task.result

        def url(name: str) -> str:
            return signer.url(task.user_id, task.job_id, name)

        outputs = [
            {
                "filename": o.filename,
                "url": url(o.filename),
                "media_type": o.media_type,
                "size": o.size,
                "sha256": o.sha256,
                "role": o.role,
            }
            for o in r.outputs
        ]
        result = {
            "input_file": r.input_file,
            "output_file": r.output_file,
            "output_url": url(r.output_file) if r.output_file else None,
            "task_type": r.task_type,
            "outputs": outputs,
            "metadata": from_struct_plain(r.metadata),
        }
    return {
        "task_id": task.task_id,
        "status": status_name(task.status),
        "progress": task.progress,
        "input_file": task.input_file,
        "error": task.error or None,
        "started_at": _ts(task, "started_at"),
        "finished_at": _ts(task, "finished_at"),
        "result": result,
        "logs": list(task.logs),
    }


def job_json(job: common_pb2.Job, signer: UrlSigner) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "status": status_name(job.status),
        "progress": job.progress,
        "message": job.message,
        "task_type": job.task_type,
        "params": from_struct_plain(job.params),
        "created_at": _ts(job, "created_at"),
        "updated_at": _ts(job, "updated_at"),
        "task_results": [task_json(t, signer) for t in job.tasks],
    }


class JsonBody(Response):
    """A JSON answer serialised by orjson, straight from the dict: FastAPI would otherwise walk a
    returned dict through jsonable_encoder and the standard json module, several times the CPU of
    building it, on the routes clients poll."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
