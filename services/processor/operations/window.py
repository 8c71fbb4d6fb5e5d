"""window: a display window in real units, the DICOM linear window function, to 8-bit grey."""

from __future__ import annotations

from typing import Any

from services.processor.imaging import intensity
from services.processor.imaging.display import auto_window
from services.processor.imaging.frames import per_frame
from services.processor.imaging.image import Display, Image
from services.processor.operations.helpers import grey_values
from services.processor.operations.registry import Operation, ParamsError, register
from services.processor.operations.schema import params_schema

PRESETS = intensity.WINDOW_PRESETS


def _check(params: dict[str, Any]) -> None:
    center, width, preset = params.get("center"), params.get("width"), params.get("preset")
    if (center is None) != (width is None):
        raise ParamsError("Give both center and width, or neither")
    if preset is not None and center is not None:
        raise ParamsError("Give either a preset or center and width, not both")


def chosen_window(image: Image, params: dict[str, Any]) -> tuple[float, float, str]:
    """(center, width, where it came from): the params, a preset, the input's own window, or the
    data's range."""
    if params.get("preset") is not None:
        center, width = PRESETS[params["preset"]]
        return center, width, f"preset {params['preset']}"
    if params.get("center") is not None:
        return float(params["center"]), float(params["width"]), "params"
    if image.display.window is not None and not image.display.native:
        center, width = image.display.window
        return float(center), max(float(width), 1.0), "input"
    center, width = auto_window(grey_values(image))
    return center, max(width, 1.0), "data range"


def window(image: Image, params: dict[str, Any]) -> Image:
    center, width, origin = chosen_window(image, params)
    invert = image.display.invert and not image.has_samples  # MONOCHROME1 stays dark-for-high

    def one(frame: Image) -> Image:
        grey = intensity.window_uint8(grey_values(frame), center, width, invert=invert)
        shown = (
            Display(native=True)
            if frame.kind == "2d"
            else Display(window=(127.5, 255.0), voi_function="LINEAR_EXACT")
        )
        return frame.with_data(grey, samples="L", display=shown)

    out = per_frame(image, one)
    out.metadata.update(window_center=center, window_width=width, window_from=origin, units="display 0-255")
    return out


_PRESET_TITLES = {
    "brain": "Brain",
    "subdural": "Subdural",
    "stroke": "Stroke",
    "lung": "Lung",
    "mediastinum": "Mediastinum",
    "abdomen": "Abdomen",
    "liver": "Liver",
    "bone": "Bone",
    "soft_tissue": "Soft tissue",
}

register(
    Operation(
        name="window",
        title="Window (center / width)",
        description="Maps real values (HU for CT) to 8-bit grey with the DICOM linear window function "
        "(PS3.3 C.11.2.1.2.1): values below center - width/2 are black, above center + width/2 white. "
        "Give center and width, or a preset; with neither, the input's own window (else its value "
        "range). Colour images are windowed on their luminance; cine frames one by one.",
        params_schema=params_schema(
            {
                "preset": {
                    # titled apart from the form's list of presets (examples), which is also "Preset"
                    "title": "Named window",
                    "type": ["string", "null"],
                    "enum": [None, *PRESETS],
                    "default": None,
                    "description": "A CT window by name (center/width in HU): "
                    + ", ".join(f"{name} {c:g}/{w:g}" for name, (c, w) in PRESETS.items())
                    + ".",
                },
                "center": {
                    "type": ["number", "null"],
                    "default": None,
                    "description": "Window center in real units (HU for CT). Empty: the preset, the "
                    "input's own window or its range.",
                },
                "width": {
                    "type": ["number", "null"],
                    "minimum": 1,
                    "default": None,
                    "description": "Window width in real units (at least 1), with center.",
                },
            },
            presets=[
                {"x-title": f"{_PRESET_TITLES[name]} ({c:g}/{w:g})", "preset": None, "center": c, "width": w}
                for name, (c, w) in PRESETS.items()
            ],
        ),
        outputs="8-bit grey: PNG for 2D inputs (JPEG with output_format=jpeg; DICOM with "
        "output_format=dicom for DICOM inputs); a uint8 .nii.gz plus axial, coronal and sagittal PNG "
        "previews for volumes",
        apply=window,
        check=_check,
    )
)
