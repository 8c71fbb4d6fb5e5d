"""Imaging for the processor: reading PNG, JPEG, DICOM (single, multi-frame, series ZIP) and NIfTI into
one Image model, the pure numpy maths of the operations, and writing results.

Never imports gRPC, NATS or SQL.
"""

from .display import to_display_uint8, window_linear
from .errors import ImagingError
from .filters import gaussian_blur, luminance, resample_linear, sigmas_in_voxels
from .frames import per_frame
from .image import Display, Frames, Image, NiftiForms, VoiTable
from .loader import detect_format, dicom_header, inspect, jsonable, load, summary
from .outputs import write_outputs

__all__ = [
    "Display",
    "Frames",
    "Image",
    "ImagingError",
    "NiftiForms",
    "VoiTable",
    "detect_format",
    "dicom_header",
    "gaussian_blur",
    "inspect",
    "jsonable",
    "load",
    "luminance",
    "per_frame",
    "resample_linear",
    "sigmas_in_voxels",
    "summary",
    "to_display_uint8",
    "window_linear",
    "write_outputs",
]
