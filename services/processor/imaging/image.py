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


@dataclass
class Image:
    """Pixel or voxel data with its geometry.

    2D: ``data`` is (rows, columns) or (rows, columns, samples). Volume: ``data`` is in NIfTI voxel
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

    @property
    def has_samples(self) -> bool:
        return self.samples != "L"

    @property
    def spatial_ndim(self) -> int:
        return 2 if self.kind == "2d" else 3

    def with_data(self, data: np.ndarray, **changes: Any) -> Image:
        """A copy carrying new data (and optionally new geometry), sharing the rest."""
        changes.setdefault("metadata", dict(self.metadata))
        return replace(self, data=data, **changes)
