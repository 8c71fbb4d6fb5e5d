"""Patient-oriented views of volumes: RAS+ canonical voxel order (as nibabel's
``as_closest_canonical``), the axial, coronal and sagittal planes shown the radiological way, and
projections (MIP) along the patient's axes whatever the voxel order."""

from __future__ import annotations

from typing import Literal

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from . import display, filters, geometry
from .image import Image

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
# The RAS+ axis each plane is perpendicular to: sagittal planes stack along x (left-right), coronal
# along y (posterior-anterior), axial along z (inferior-superior).
PLANE_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}
# Square-pixel views are at most this many pixels a side (previews and projections).
MAX_VIEW_SIDE = 2048


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Data (first three axes spatial) and affine in the closest RAS+ voxel order: each voxel axis
    flipped and permuted onto the world axis it is closest to, exactly as nibabel's
    ``as_closest_canonical`` (a view of ``data``, no copy). Oblique volumes are not resampled."""
    ornt = io_orientation(affine)
    out = apply_orientation(data, ornt)
    return out, affine @ inv_ornt_aff(ornt, data.shape[:3])


def plane_axes(plane: Plane) -> tuple[int, int]:
    """The two RAS+ axes spanning a plane, in (u, v) order for ``display.radiological_view``."""
    return tuple(a for a in range(3) if a != PLANE_NORMAL[plane])  # type: ignore[return-value]


def to_display_orientation(plane_values: np.ndarray) -> np.ndarray:
    """A plane (u, v[, ...]) of RAS+ axes as image rows and columns, radiological display: axial
    with anterior up and the patient's right on the viewer's left; coronal with superior up and the
    right on the left; sagittal with superior up and anterior on the left."""
    return display.radiological_view(plane_values)


def square_pixels(view: np.ndarray, row_mm: float, column_mm: float) -> tuple[np.ndarray, float]:
    """A displayed plane (rows, columns[, ...]) resampled linearly to square pixels of the smaller
    of its two spacings (capped at MAX_VIEW_SIDE pixels a side), and that pixel size in mm.
    Unchanged when the spacings differ by under 1 %."""
    rows, columns = view.shape[:2]
    if abs(row_mm - column_mm) <= 0.01 * max(row_mm, column_mm):
        return view, float(min(row_mm, column_mm))
    pixel = min(row_mm, column_mm)
    shape = (max(1, round(rows * row_mm / pixel)), max(1, round(columns * column_mm / pixel)))
    scale = max(shape) / MAX_VIEW_SIDE
    if scale > 1:
        shape = (max(1, round(shape[0] / scale)), max(1, round(shape[1] / scale)))
        pixel = rows * row_mm / shape[0]
    return filters.resample_linear(view, shape), float(pixel)


def middle_plane(image: Image, plane: Plane) -> tuple[np.ndarray, tuple[float, float]]:
    """The middle slice of a volume in one patient plane, in display orientation (rows, columns[,
    samples]), and its (row, column) spacing in mm. 4D volumes: the first time point."""
    data = _first_time_point(image)
    affine = image.affine if image.affine is not None else np.eye(4)
    data, affine = canonical(data, affine)
    spacing = geometry.voxel_sizes(affine)
    normal = PLANE_NORMAL[plane]
    middle = np.take(data, data.shape[normal] // 2, axis=normal)
    u, v = plane_axes(plane)
    return to_display_orientation(middle), (spacing[v], spacing[u])


def project(
    data: np.ndarray, affine: np.ndarray, plane: Plane, mode: str
) -> tuple[np.ndarray, tuple[float, float]]:
    """Projection of a volume (x, y, z[, t]) through the patient perpendicular to ``plane``:
    the maximum, minimum or mean along that RAS+ axis (NaN ignored), in display orientation
    (rows, columns[, t]), and its (row, column) spacing in mm."""
    ornt = io_orientation(affine)
    normal = PLANE_NORMAL[plane]
    reduce = {"max": np.nanmax, "min": np.nanmin, "mean": np.nanmean}[mode]
    values = data if data.dtype.kind == "f" else data.astype(np.float32 if mode == "mean" else data.dtype)
    # Reduced along the voxel axis that runs along the plane's normal, in the stored order (its
    # direction changes no maximum, minimum or mean), and only then are the two other axes put in
    # canonical order: the same values as projecting the canonical view, without reducing a
    # flipped, strided view of the whole volume.
    axis = int(np.flatnonzero(ornt[:, 0] == normal)[0])
    rest = [a for a in range(3) if a != axis]
    in_plane = ornt[rest].copy()
    in_plane[:, 0] = [t - 1 if t > normal else t for t in in_plane[:, 0]]
    projected = apply_orientation(reduce(values, axis=axis), in_plane)
    spacing = geometry.voxel_sizes(affine @ inv_ornt_aff(ornt, data.shape[:3]))
    u, v = plane_axes(plane)
    return to_display_orientation(projected), (spacing[v], spacing[u])


def _first_time_point(image: Image) -> np.ndarray:
    data = image.data
    spatial_and_samples = 4 if image.has_samples else 3
    while data.ndim > spatial_and_samples:
        data = data[:, :, :, 0]
    return data
