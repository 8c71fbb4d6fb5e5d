"""The operations catalogue: one module per operation (or family), registered at import.

``registry`` holds the rules every operation follows (name, accepted inputs, params schema),
``schema`` builds params schemas and words their errors, ``runner`` runs one operation on a file.
Adding an operation is a new module here plus one name in the import list below, whose order is
the catalogue's order (docs/design.md, "Adding an operation").
"""

from services.processor.operations.helpers import MAX_OUTPUT_PIXELS, MAX_OUTPUT_VOXELS
from services.processor.operations.registry import (
    _REGISTRY,  # the live table, for tests that swap an operation
    FORMATS,
    KINDS,
    FileTask,
    InputNotAccepted,
    Operation,
    OperationError,
    OutputRules,
    ParamsError,
    catalogue,
    get,
    register,
    validate_params,
)
from services.processor.operations.runner import run
from services.processor.operations.schema import preset_params

# Registration order is catalogue order.
from services.processor.operations import (  # noqa: E402, F401, I001  isort: skip
    blur, resize, grayscale, window, normalize, denoise, edges, equalize, mip, threshold, reorient,
    convert, anonymize,
)

__all__ = [
    "FORMATS",
    "KINDS",
    "MAX_OUTPUT_PIXELS",
    "MAX_OUTPUT_VOXELS",
    "_REGISTRY",
    "FileTask",
    "InputNotAccepted",
    "Operation",
    "OperationError",
    "OutputRules",
    "ParamsError",
    "catalogue",
    "get",
    "preset_params",
    "register",
    "run",
    "validate_params",
]
