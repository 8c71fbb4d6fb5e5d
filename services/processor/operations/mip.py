"""mip: a projection of a volume through the patient (maximum, minimum or mean intensity)."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.processor.imaging import filters, views
from services.processor.imaging.image import Display, Frames, Image
from services.processor.operations.registry import Operation, OutputRules, register
from services.processor.operations.schema import params_schema


def mip(image: Image, params: dict[str, Any]) -> Image:
    """A 2D image of real values in radiological display orientation with square pixels; a 4D
    volume gives one projection per time point (a time series)."""
    plane, mode = params["axis"], params["mode"]
    data = filters.luminance(image.data) if image.has_samples else image.data
    affine = image.affine if image.affine is not None else np.diag([*(image.spacing or (1.0, 1.0, 1.0)), 1.0])
    projected, (row_mm, column_mm) = views.project(data, affine, plane, mode)
    # whole numbers stay exact unless the pixels must be made square (then linear, float32)
    values, pixel_mm = views.square_pixels(projected, row_mm, column_mm)
    frames = None
    if values.ndim == 3:  # (rows, columns, t)
        frames = Frames(interval_ms=None, reason="time points of a 4D volume")
    shown = image.display if image.display.window is not None and not image.has_samples else Display()
    out = Image(
        data=np.ascontiguousarray(values),
        kind="2d",
        spacing=(pixel_mm, pixel_mm),
        samples="L",
        display=Display(window=shown.window, voi_function=shown.voi_function, invert=shown.invert),
        metadata=dict(image.metadata),
        frames=frames,
    )
    out.metadata.update(
        projection_axis=plane,
        projection_mode=mode,
        projection_pixel_mm=round(pixel_mm, 6),
        display_convention="radiological: "
        + {
            "axial": "anterior up, patient's right on the left",
            "coronal": "superior up, patient's right on the left",
            "sagittal": "superior up, anterior on the left",
        }[plane],
    )
    return out


register(
    Operation(
        name="mip",
        title="Intensity projection (MIP / MinIP / mean)",
        description="Projects a volume through the patient along the axial (foot-head), coronal "
        "(back-front) or sagittal (left-right) direction, whatever the voxel order of the file: the "
        "maximum (MIP), minimum (MinIP) or mean intensity in real units. The image is shown the "
        "radiological way (patient's right on the viewer's left), with square pixels.",
        params_schema=params_schema(
            {
                "axis": {
                    "type": "string",
                    "enum": ["axial", "coronal", "sagittal"],
                    "default": "axial",
                    "description": "The patient plane shown; the projection runs perpendicular to it.",
                },
                "mode": {
                    "type": "string",
                    "enum": ["max", "min", "mean"],
                    "default": "max",
                    "description": "max (MIP: vessels, bone), min (MinIP: airways), or mean.",
                },
            },
            presets=[
                {"x-title": "Axial MIP", "axis": "axial", "mode": "max"},
                {"x-title": "Coronal MIP", "axis": "coronal", "mode": "max"},
                {"x-title": "Sagittal MIP", "axis": "sagittal", "mode": "max"},
                {"x-title": "Coronal MinIP (airways)", "axis": "coronal", "mode": "min"},
            ],
        ),
        outputs="A PNG (JPEG with output_format=jpeg; a derived DICOM in real units with "
        "output_format=dicom for DICOM inputs); a 4D volume gives a .nii.gz time series of projections",
        apply=mip,
        kinds=("3d",),
        formats=("dicom", "nifti", "dicom_series"),
        output=OutputRules(keeps_plane=False),
    )
)
