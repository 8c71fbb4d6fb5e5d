"""Operations that take only some inputs, registered on demand by tests of `accepts` (the service's
own operations all take every input)."""

from __future__ import annotations

from dataclasses import replace

from services.processor.operations import registry


def register_narrow_ops() -> None:
    """volume_blur takes 3D inputs only; dicom_blur takes DICOM files and series only."""
    blur = registry.get("blur")
    known = {entry["name"] for entry in registry.catalogue()}
    for op in (
        replace(blur, name="volume_blur", kinds=("3d",)),
        replace(blur, name="dicom_blur", formats=("dicom_series", "dicom")),
    ):
        if op.name not in known:
            registry.register(op)
