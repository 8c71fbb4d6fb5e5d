"""convert: the same image in another file format (PNG, JPEG, NIfTI, DICOM)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.processor.imaging.image import Image
from services.processor.operations.registry import Operation, OutputRules, register
from services.processor.operations.schema import params_schema


def convert(image: Image, params: dict[str, Any]) -> Image:
    """The image unchanged, but for what the target format cannot hold: NIfTI and DICOM have no
    alpha channel (dropped), and a PNG or JPEG of a cine is its middle frame."""
    fmt = params["format"]
    out = image.with_data(image.data)
    if fmt in ("nifti", "dicom") and image.samples in ("RGBA", "LA"):
        kept = 3 if image.samples == "RGBA" else 1
        data = image.data[..., :kept] if kept == 3 else image.data[..., 0]
        out = image.with_data(data, samples="RGB" if kept == 3 else "L")
        out.metadata["alpha_dropped"] = True
    if fmt in ("png", "jpeg") and image.frames is not None:
        middle = image.frame_count // 2
        out = replace(image.frame(middle), metadata=dict(image.metadata))
        out.metadata["frame_written"] = f"{middle + 1} of {image.frame_count} (the middle frame)"
    out.metadata["converted_to"] = fmt
    return out


register(
    Operation(
        name="convert",
        title="Convert format",
        description="Writes the image in another format. nifti: real units exactly as read (no "
        "rescaling or rounding), with the patient geometry. dicom: a new series of the input's study "
        "(a new study for non-DICOM inputs) in real units through rescale slope/intercept; a volume is a "
        "ZIP of one file per slice with its position, orientation and spacing. png/jpeg: the displayed "
        "image (DICOM through its window); a volume gives its axial, coronal and sagittal middle slices.",
        params_schema=params_schema(
            {
                "format": {
                    "type": "string",
                    "enum": ["png", "jpeg", "nifti", "dicom"],
                    "default": "nifti",
                    "description": "Target format: png, jpeg, nifti (.nii.gz) or dicom (.dcm; a ZIP series "
                    "for volumes).",
                },
            },
            presets=[
                {"x-title": "To NIfTI", "format": "nifti"},
                {"x-title": "To DICOM", "format": "dicom"},
                {"x-title": "To PNG", "format": "png"},
            ],
            output_format=None,
        ),
        outputs="The chosen format: PNG/JPEG (volumes: axial primary, coronal and sagittal previews), "
        ".nii.gz, or DICOM (.dcm for 2D and cine, a ZIP of one file per slice for volumes), with PNG "
        "previews",
        apply=convert,
        output=OutputRules(param="format", volume_as_images=True, dicom_from_any=True),
    )
)
