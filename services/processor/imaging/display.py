"""Mapping real values to 8-bit grey for display (DICOM PS3.3 C.11.2 VOI LUT / window)."""

from __future__ import annotations

import numpy as np

from .image import Display, VoiTable


def window_linear(
    values: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 255.0
) -> np.ndarray:
    """DICOM "LINEAR" window function (C.11.2.1.2.1), as float32."""
    width = max(float(width), 1.0)
    c = float(center) - 0.5
    w = width - 1.0
    if w <= 0:  # width 1: a pure threshold
        return np.where(values <= c, y_min, y_max).astype(np.float32)
    out = ((values - c) / w + 0.5) * (y_max - y_min) + y_min
    return np.clip(out, y_min, y_max, dtype=np.float32, casting="unsafe")


def window_linear_exact(
    values: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 255.0
) -> np.ndarray:
    """DICOM "LINEAR_EXACT" window function (C.11.2.1.3.2)."""
    width = max(float(width), np.finfo(np.float32).tiny)
    out = ((values - float(center)) / width + 0.5) * (y_max - y_min) + y_min
    return np.clip(out, y_min, y_max, dtype=np.float32, casting="unsafe")


def window_sigmoid(
    values: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 255.0
) -> np.ndarray:
    """DICOM "SIGMOID" window function (C.11.2.1.3.1)."""
    width = max(float(width), np.finfo(np.float32).tiny)
    out = (y_max - y_min) / (1.0 + np.exp(-4.0 * (values - float(center)) / width)) + y_min
    return out.astype(np.float32, copy=False)


_WINDOW_FUNCTIONS = {"LINEAR": window_linear, "LINEAR_EXACT": window_linear_exact, "SIGMOID": window_sigmoid}


def apply_voi_table(values: np.ndarray, voi: VoiTable) -> np.ndarray:
    """Look values up in a VOI LUT, clamping outside its range; result scaled to 0..255."""
    index = np.clip(np.rint(values - voi.first_mapped), 0, len(voi.table) - 1).astype(np.intp)
    top = float(2**voi.bits - 1)
    return (voi.table[index].astype(np.float32) * np.float32(255.0 / top)).clip(0, 255)


def auto_window(values: np.ndarray, low_pct: float = 0.0, high_pct: float = 100.0) -> tuple[float, float]:
    """(center, width) spanning the data's own range (or a percentile range)."""
    if low_pct <= 0 and high_pct >= 100 and values.size:
        lo, hi = float(values.min()), float(values.max())
        if np.isfinite(lo) and np.isfinite(hi):  # no NaN or infinity: no masked copy needed
            return (lo + hi) / 2.0, max(hi - lo, 1e-6)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return 0.0, 1.0
    if low_pct <= 0 and high_pct >= 100:
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = (float(v) for v in np.percentile(finite, [low_pct, high_pct]))
    return (lo + hi) / 2.0, max(hi - lo, 1e-6)


def to_display_uint8(
    values: np.ndarray, display: Display, fallback_pct: tuple[float, float] = (0.0, 100.0)
) -> np.ndarray:
    """Real values to 8-bit grey: VOI LUT, else window, else the data's range; MONOCHROME1 inverted."""
    if display.voi_table is not None:
        grey = apply_voi_table(values, display.voi_table)
    else:
        if display.window is not None:
            center, width = display.window
            function = _WINDOW_FUNCTIONS.get(display.voi_function, window_linear)
        else:
            center, width = auto_window(values, *fallback_pct)
            function = window_linear_exact  # an exact min..max stretch
        grey = function(values, center, width)
    if display.invert:
        grey = 255.0 - grey
    return np.rint(grey).astype(np.uint8)


def to_uint8_native(values: np.ndarray) -> np.ndarray:
    """Display values (8 or 16 bit, or floats from a filter) to uint8."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.uint16:
        return (values.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def radiological_view(axial: np.ndarray) -> np.ndarray:
    """An axial slice of an RAS+ volume, (x, y[, samples]), as image rows/columns the way radiology
    viewers show it: anterior at the top, the patient's right on the viewer's left."""
    return np.swapaxes(axial[::-1, ::-1], 0, 1)
