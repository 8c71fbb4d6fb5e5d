"""The in-memory image that every reader produces and every operation consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

Kind = Literal["2d", "volume"]


@dataclass(frozen=True)
class VoiTable:
    """A DICOM VOI LUT (0028,3010): maps real values to display values 0 .. 2**bits - 1."""

    first_mapped: float
    table: np.ndarray
    bits: int


@dataclass(frozen=True)
class Display:
    """How the stored values become grey levels on screen.

    ``native`` means the values already are display values (PNG/JPEG pixels, colour DICOM) and
    are written in their own mode. Otherwise they are real units (HU, ...) mapped through the VOI
    LUT, else the window, else the data's own range; ``invert`` is MONOCHROME1.
    """

    native: bool = False
    window: tuple[float, float] | None = None  # (center, width) in real units
    voi_function: str = "LINEAR"
    voi_table: VoiTable | None = None
    invert: bool = False


@dataclass(frozen=True)
class Frames:
    """Marks a 2D image whose third axis is time, not space: an ultrasound or X-ray cine, a
    multi-phase acquisition without per-frame positions. Such frames are processed one at a time
    (``frames.per_frame``), never smoothed or resampled across; there is no slice spacing."""

    interval_ms: float | None = None  # DICOM Frame Time (0018,1063), when known
    reason: str = "time"  # why the frames are not a volume, for the result's metadata


@dataclass(frozen=True)
class NiftiForms:
    """A NIfTI input's qform and sform, each with its own code, as 4x4 voxel-to-world matrices of
    the grid whose affine is ``affine``. A writer carries both over to a result's grid."""

    qform: np.ndarray
    qform_code: int
    sform: np.ndarray
    sform_code: int
    affine: np.ndarray


@dataclass
class Image:
    """Pixel or voxel data with its geometry.

    2D: ``data`` is (rows, columns) or (rows, columns, samples); a 2D time series (``frames`` set)
    is (rows, columns, frames) or (rows, columns, frames, samples). Volume: ``data`` is in NIfTI voxel
    order (i, j, k[, t]) or (i, j, k, 3) for colour, with ``affine`` mapping voxel indices to RAS+
    world millimetres. ``samples`` names the last axis: "L" means there is no sample axis.
    """

    data: np.ndarray
    kind: Kind
    affine: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None  # 2D: (row, column) mm; volume: (x, y, z) mm
    samples: str = "L"  # "L", "LA", "RGB" or "RGBA"
    display: Display = field(default_factory=Display)
    metadata: dict[str, Any] = field(default_factory=dict)
    frames: Frames | None = None  # set: a 2D time series, data (rows, columns, frames[, samples])
    nifti_forms: NiftiForms | None = None  # a NIfTI input's own qform and sform

    @property
    def has_samples(self) -> bool:
        return self.samples != "L"

    @property
    def spatial_ndim(self) -> int:
        return 2 if self.kind == "2d" else 3

    @property
    def is_frames(self) -> bool:
        """A 2D image that is a sequence of frames in time (see ``Frames``)."""
        return self.frames is not None

    @property
    def frame_count(self) -> int:
        return int(self.data.shape[2]) if self.frames is not None else 1

    def frame(self, index: int) -> Image:
        """One frame of a time series as a plain 2D image (sharing the rest)."""
        if self.frames is None:
            raise ValueError("not a time series")
        return replace(self, data=self.data[:, :, index], frames=None, metadata=dict(self.metadata))

    def with_data(self, data: np.ndarray, **changes: Any) -> Image:
        """A copy carrying new data (and optionally new geometry), sharing the rest."""
        changes.setdefault("metadata", dict(self.metadata))
        return replace(self, data=data, **changes)
