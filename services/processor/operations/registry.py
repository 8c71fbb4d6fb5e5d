"""The registry of operations: what each one is called, accepts, takes and does.

Every operation module calls ``register(Operation(...))`` once at import. Registration checks what
can be checked before any task runs: the name against the jobs service's task-type rule, the
params schema and its presets, and the accepted inputs against the vocabulary below.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from services.common import accepts as av
from services.common.task_types import TASK_TYPE_RULE, is_valid_task_type
from services.processor.imaging.image import Image
from services.processor.operations.schema import preset_params, readable_error

# The vocabulary of `accepts` (kinds, then formats) is shared with the gateway.
KINDS, FORMATS = av.KINDS, av.FORMATS


class OperationError(ValueError):
    """A task the operation refuses, whatever the attempt; ``str(error)`` is written for users."""


class ParamsError(OperationError):
    """Params that do not fit the operation."""


class InputNotAccepted(OperationError):
    """An input of a kind or format the operation does not take."""


@dataclass(frozen=True)
class OutputRules:
    """How an operation's result is written. ``param`` names the param holding the output format
    ("output_format", or convert's "format"); ``keeps_plane``: a 2D result lies on the input's
    plane (a derived DICOM keeps its position and orientation); ``volume_as_images``: PNG/JPEG of a
    volume are the images of its three planes (else a .nii.gz with previews); ``dicom_from_any``:
    DICOM output from any input (else only from DICOM inputs)."""

    param: str = "output_format"
    keeps_plane: bool = True
    volume_as_images: bool = False
    dicom_from_any: bool = False


@dataclass(frozen=True)
class FileTask:
    """An operation that works on the file itself rather than on decoded pixels (``run_file``):
    where it reads and writes, its params and the task's context."""

    input_path: Path
    file_format: str  # as imaging names it: "png", ..., "zip"
    out_dir: Path
    stem: str
    params: dict[str, Any]
    job_id: str
    series_instance_uid: str | None


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    description: str
    params_schema: dict[str, Any]
    outputs: str
    apply: Callable[[Image, dict[str, Any]], Image] | None
    kinds: tuple[str, ...] = KINDS  # some of KINDS
    formats: tuple[str, ...] = FORMATS  # some of FORMATS
    check: Callable[[dict[str, Any]], None] | None = None  # rules a schema says badly
    output: OutputRules = OutputRules()
    # Instead of apply: the whole task on the file ({"outputs": [...], "metadata": {...}}).
    run_file: Callable[[FileTask], dict[str, Any]] | None = None
    # Working bytes per decoded value ("2d", "volume") where the operation needs more than
    # imaging.limits.WORK_BYTES_PER_VALUE (checked by tests/processor/test_memory_budget.py).
    work_bytes: dict[str, int] | None = None

    @property
    def accepts(self) -> list[str]:
        """The catalogue's `accepts`: input kinds, then file formats, in the vocabulary's order."""
        return [*av.ordered(self.kinds, KINDS), *av.ordered(self.formats, FORMATS)]

    def check_format(self, file_format: str) -> None:
        """``file_format`` as imaging names it ("png", ..., "zip")."""
        refusal = av.format_refusal(self.name, file_format, self.formats)
        if refusal:
            raise InputNotAccepted(refusal)

    def check_kind(self, image: Image) -> None:
        refusal = av.kind_refusal(self.name, "2d" if image.kind == "2d" else "3d", self.kinds)
        if refusal:
            raise InputNotAccepted(refusal)


_REGISTRY: dict[str, Operation] = {}
_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}


def register(op: Operation) -> Operation:
    """Add an operation; ValueError (at import, so never in a running service) when it breaks a
    rule."""
    if not is_valid_task_type(op.name):
        raise ValueError(f"operation name {op.name!r} is not a task type: {TASK_TYPE_RULE}")
    if op.name in _REGISTRY:
        raise ValueError(f"operation {op.name!r} is registered twice")
    if (op.apply is None) == (op.run_file is None):
        raise ValueError(f"operation {op.name!r} needs exactly one of apply and run_file")
    for given, vocabulary, what in ((op.kinds, KINDS, "kinds"), (op.formats, FORMATS, "formats")):
        if not given or not set(given) <= set(vocabulary):
            raise ValueError(f"operation {op.name!r}: {what} must be some of {', '.join(vocabulary)}")
    jsonschema.Draft202012Validator.check_schema(op.params_schema)
    validator = jsonschema.Draft202012Validator(op.params_schema)
    for preset in op.params_schema.get("examples", []):
        try:
            _validated(op, validator, preset_params(preset))
        except ParamsError as exc:
            raise ValueError(f"operation {op.name!r} has a preset its schema refuses: {exc}") from None
    _REGISTRY[op.name] = op
    _VALIDATORS[op.name] = validator
    return op


def get(task_type: str) -> Operation:
    """The operation; ParamsError naming the known ones when there is none."""
    op = _REGISTRY.get(task_type)
    if op is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ParamsError(f"Unknown task_type {task_type!r}; available operations: {known}")
    return op


def catalogue() -> list[dict[str, Any]]:
    """Every operation, in registration order, for GET /operations and ListOperations."""
    return [
        {
            "name": op.name,
            "title": op.title,
            "description": op.description,
            "accepts": op.accepts,
            "params_schema": copy.deepcopy(op.params_schema),
            "outputs": op.outputs,
        }
        for op in _REGISTRY.values()
    ]


def validate_params(task_type: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The params with defaults filled in; ParamsError for an unknown operation or bad params."""
    op = get(task_type)
    return _validated(op, _VALIDATORS[task_type], {} if params is None else params)


def _validated(op: Operation, validator: jsonschema.protocols.Validator, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise ParamsError("params must be a JSON object")
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        raise ParamsError(readable_error(errors[0], op.name, op.params_schema))
    filled = copy.deepcopy(params)
    for name, prop in op.params_schema["properties"].items():
        if name not in filled and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    if op.check is not None:
        op.check(filled)
    return filled
