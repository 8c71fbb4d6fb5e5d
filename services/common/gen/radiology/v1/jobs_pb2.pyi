from google.protobuf import struct_pb2 as _struct_pb2
from services.common.gen.radiology.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobInput(_message.Message):
    __slots__ = ("filename", "key", "format", "size", "series")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    filename: str
    key: str
    format: str
    size: int
    series: _containers.RepeatedCompositeFieldContainer[InputSeries]
    def __init__(self, filename: _Optional[str] = ..., key: _Optional[str] = ..., format: _Optional[str] = ..., size: _Optional[int] = ..., series: _Optional[_Iterable[_Union[InputSeries, _Mapping]]] = ...) -> None: ...

class InputSeries(_message.Message):
    __slots__ = ("series_instance_uid", "name")
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    name: str
    def __init__(self, series_instance_uid: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("job_id", "user_id", "task_type", "params", "inputs", "idempotency_key")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user_id: str
    task_type: str
    params: _struct_pb2.Struct
    inputs: _containers.RepeatedCompositeFieldContainer[JobInput]
    idempotency_key: str
    def __init__(self, job_id: _Optional[str] = ..., user_id: _Optional[str] = ..., task_type: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[JobInput, _Mapping]]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("user_id", "job_id", "idempotency_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    job_id: str
    idempotency_key: str
    def __init__(self, user_id: _Optional[str] = ..., job_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("user_id", "status", "limit", "cursor")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: _common_pb2.Status
    limit: int
    cursor: str
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.Status, str]] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_cursor")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Job]
    next_cursor: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_common_pb2.Job, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("user_id", "task_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    task_id: str
    def __init__(self, user_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("user_id", "job_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    job_id: str
    def __init__(self, user_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("user_id", "job_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    job_id: str
    def __init__(self, user_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("objects_deleted",)
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    objects_deleted: int
    def __init__(self, objects_deleted: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("user_id", "job_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    job_id: str
    def __init__(self, user_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class AdmitSubmissionRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class UsageLimits(_message.Message):
    __slots__ = ("submissions_per_minute", "submission_burst", "max_active_jobs", "max_stored_bytes")
    SUBMISSIONS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_BURST_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    submissions_per_minute: int
    submission_burst: int
    max_active_jobs: int
    max_stored_bytes: int
    def __init__(self, submissions_per_minute: _Optional[int] = ..., submission_burst: _Optional[int] = ..., max_active_jobs: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("user_id", "active_jobs", "stored_bytes", "limits", "submissions_available")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    active_jobs: int
    stored_bytes: int
    limits: UsageLimits
    submissions_available: int
    def __init__(self, user_id: _Optional[str] = ..., active_jobs: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., limits: _Optional[_Union[UsageLimits, _Mapping]] = ..., submissions_available: _Optional[int] = ...) -> None: ...

class Admission(_message.Message):
    __slots__ = ("usage", "remaining_bytes")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_BYTES_FIELD_NUMBER: _ClassVar[int]
    usage: Usage
    remaining_bytes: int
    def __init__(self, usage: _Optional[_Union[Usage, _Mapping]] = ..., remaining_bytes: _Optional[int] = ...) -> None: ...

class LimitExceeded(_message.Message):
    __slots__ = ("limit", "retry_after_seconds", "usage")
    class Limit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LIMIT_UNSPECIFIED: _ClassVar[LimitExceeded.Limit]
        LIMIT_SUBMISSION_RATE: _ClassVar[LimitExceeded.Limit]
        LIMIT_ACTIVE_JOBS: _ClassVar[LimitExceeded.Limit]
        LIMIT_STORED_BYTES: _ClassVar[LimitExceeded.Limit]
    LIMIT_UNSPECIFIED: LimitExceeded.Limit
    LIMIT_SUBMISSION_RATE: LimitExceeded.Limit
    LIMIT_ACTIVE_JOBS: LimitExceeded.Limit
    LIMIT_STORED_BYTES: LimitExceeded.Limit
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    limit: LimitExceeded.Limit
    retry_after_seconds: float
    usage: Usage
    def __init__(self, limit: _Optional[_Union[LimitExceeded.Limit, str]] = ..., retry_after_seconds: _Optional[float] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
