"""Affine maths: DICOM patient geometry (LPS) to NIfTI voxel-to-world affines (RAS+)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# DICOM patient axes point to Left, Posterior, Superior; NIfTI world axes to Right, Anterior, Superior.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane: row direction x column direction."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm == 0:
        raise ValueError("ImageOrientationPatient rows are parallel")
    return normal / norm


def slice_order(positions: np.ndarray, orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Indices that sort slices along the normal, and their sorted distances along it (mm)."""
    distances = np.asarray(positions, float) @ slice_normal(orientation)
    order = np.argsort(distances, kind="stable")
    return order, distances[order]


def dicom_affine(
    orientation: Sequence[float] | None,
    position: Sequence[float] | None,
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float] | float,
) -> np.ndarray:
    """Voxel (column, row, slice) to RAS+ mm.

    ``pixel_spacing`` is DICOM's (row spacing, column spacing); ``slice_step`` is the LPS vector
    from one slice to the next, or a scalar distance along the normal.
    """
    if orientation is None:
        orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    row_dir = np.asarray(orientation[:3], float)
    col_dir = np.asarray(orientation[3:6], float)
    step = np.asarray(slice_step, float)
    if step.ndim == 0:
        step = slice_normal(orientation) * float(step)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * float(pixel_spacing[1])  # moving along a row = next column
    lps[:3, 1] = col_dir * float(pixel_spacing[0])
    lps[:3, 2] = step
    lps[:3, 3] = np.zeros(3) if position is None else np.asarray(position, float)
    return LPS_TO_RAS @ lps


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Length in mm of one voxel step along each voxel axis."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


def resampled_affine(affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of a grid resampled from old_shape to new_shape over the same field of view.

    Voxel edges stay put: new voxel i' has its centre at old index (i' + 0.5) * n / n' - 0.5.
    """
    factors = np.asarray(old_shape[:3], float) / np.asarray(new_shape[:3], float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (factors - 1.0) / 2.0
    return affine @ scale
