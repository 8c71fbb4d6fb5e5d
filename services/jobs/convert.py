"""Jobs and tasks to protobuf messages."""

from __future__ import annotations

from google.protobuf import json_format

from services.common.gen.radiology.v1 import common_pb2
from services.common.protobuf import to_struct, to_timestamp
from services.common.status import status_value
from services.jobs.models import JobState, TaskState


def task_to_proto(task: TaskState) -> common_pb2.Task:
    msg = common_pb2.Task(
        task_id=task.task_id, job_id=task.job_id, user_id=task.user_id,
        status=status_value(task.status), progress=task.progress, input_file=task.input_file,
        input_key=task.input_key, error=task.error, message=task.message,
        started_at=to_timestamp(task.started_at), finished_at=to_timestamp(task.finished_at),
        series_instance_uid=task.series_uid, logs=task.logs or [],
    )
    if task.result:
        json_format.ParseDict(task.result, msg.result, ignore_unknown_fields=True)
    return msg


def job_to_proto(job: JobState) -> common_pb2.Job:
    return common_pb2.Job(
        job_id=job.job_id, user_id=job.user_id, status=status_value(job.status),
        progress=job.progress, message=job.message, task_type=job.task_type,
        params=to_struct(job.params), created_at=to_timestamp(job.created_at),
        updated_at=to_timestamp(job.updated_at), tasks=[task_to_proto(t) for t in job.tasks],
    )
