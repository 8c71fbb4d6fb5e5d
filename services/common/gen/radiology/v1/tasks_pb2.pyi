from google.protobuf import struct_pb2 as _struct_pb2
from services.common.gen.radiology.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskMessage(_message.Message):
    __slots__ = ("task_id", "job_id", "user_id", "task_type", "params", "input_key", "input_file", "output_stem", "series_instance_uid", "dispatched_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FILE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_STEM_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    user_id: str
    task_type: str
    params: _struct_pb2.Struct
    input_key: str
    input_file: str
    output_stem: str
    series_instance_uid: str
    dispatched_at: float
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., user_id: _Optional[str] = ..., task_type: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., input_key: _Optional[str] = ..., input_file: _Optional[str] = ..., output_stem: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., dispatched_at: _Optional[float] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "job_id", "status", "progress", "message", "error", "result", "emitted_at", "logs")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    status: _common_pb2.Status
    progress: int
    message: str
    error: str
    result: _common_pb2.TaskResult
    emitted_at: float
    logs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.Status, str]] = ..., progress: _Optional[int] = ..., message: _Optional[str] = ..., error: _Optional[str] = ..., result: _Optional[_Union[_common_pb2.TaskResult, _Mapping]] = ..., emitted_at: _Optional[float] = ..., logs: _Optional[_Iterable[str]] = ...) -> None: ...
