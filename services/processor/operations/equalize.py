"""equalize: contrast-limited adaptive histogram equalisation (CLAHE)."""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np

from services.processor.imaging import filters, intensity
from services.processor.imaging.frames import per_frame
from services.processor.imaging.image import Display, Image
from services.processor.operations.registry import Operation, register
from services.processor.operations.schema import params_schema


def equalize(image: Image, params: dict[str, Any]) -> Image:
    clip_limit, kernel_size = float(params["clip_limit"]), params["kernel_size"]

    def one(frame: Image) -> Image:
        data = frame.data
        if frame.samples in ("RGB", "RGBA") and frame.kind == "2d":  # CLAHE of the HSV value; alpha kept
            rgb = intensity.clahe(data[..., :3], clip_limit, kernel_size, colour=True)
            values = filters.cast_like(rgb * 255.0, np.uint8)
            if frame.samples == "RGBA":
                values = np.concatenate([values, filters.cast_like(data[..., 3:], np.uint8)], axis=-1)
            return frame.with_data(values, display=Display(native=True))
        if frame.samples == "LA":
            grey = data[..., 0]
        else:  # a colour volume: its luminance
            grey = filters.luminance(data) if frame.has_samples else data
        spatial = frame.spatial_ndim
        if grey.ndim == spatial:  # the result is the only full-size array made here
            out = intensity.clahe(grey, clip_limit, kernel_size)
        else:
            out = np.empty(grey.shape, np.float32)
            for index in product(*(range(n) for n in grey.shape[spatial:])):  # 4D: each time point
                part = (slice(None),) * spatial + index
                out[part] = intensity.clahe(grey[part], clip_limit, kernel_size)
        if frame.kind == "2d":
            return frame.with_data(
                filters.cast_like(out * 255.0, np.uint8), samples="L", display=Display(native=True)
            )
        return frame.with_data(
            out, samples="L", display=Display(window=(0.5, 1.0), voi_function="LINEAR_EXACT")
        )

    out = per_frame(image, one)
    out.metadata.update(clahe_clip_limit=clip_limit, clahe_kernel_size=kernel_size, units="0-1")
    return out


register(
    Operation(
        name="equalize",
        # Colour goes through scikit-image's float64 HSV conversions: measured ~87 bytes a value on
        # RGBA. Grey volumes need the default (our CLAHE: the float32 result, one byte of bins per
        # voxel and slabs; measured ~9 bytes a value on a 16-bit volume).
        work_bytes={"2d": 128},
        title="Adaptive histogram equalisation (CLAHE)",
        description="Contrast Limited Adaptive Histogram Equalisation (scikit-image's "
        "equalize_adapthist), in 3D for volumes: local contrast is enhanced in contextual regions of "
        "kernel_size pixels/voxels, with the histogram clipped at clip_limit. Grey values are first "
        "mapped from their range onto 0..1; colour is equalised on its HSV value; cine frames one by one.",
        params_schema=params_schema(
            {
                "clip_limit": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 1,
                    "default": 0.01,
                    "description": "Clipping limit, 0..1 as in scikit-image (higher: more contrast).",
                },
                "kernel_size": {
                    "type": ["integer", "null"],
                    "minimum": 2,
                    "maximum": 1024,
                    "default": None,
                    "description": "Side of the contextual regions in pixels (voxels for volumes). Empty: "
                    "1/8 of each axis.",
                },
            },
            presets=[
                {"x-title": "Gentle (clip 0.01)", "clip_limit": 0.01, "kernel_size": None},
                {"x-title": "Strong (clip 0.03)", "clip_limit": 0.03, "kernel_size": None},
                {"x-title": "Fine regions (64 px, clip 0.02)", "clip_limit": 0.02, "kernel_size": 64},
            ],
        ),
        outputs="8-bit PNG for 2D inputs (JPEG with output_format=jpeg; DICOM with output_format=dicom "
        "for DICOM inputs); float32 .nii.gz (0..1) plus axial, coronal and sagittal PNG previews for volumes",
        apply=equalize,
    )
)
