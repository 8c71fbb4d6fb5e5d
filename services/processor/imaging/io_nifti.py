"""NIfTI-1 / NIfTI-2 (.nii, .nii.gz) through nibabel, keeping affine, codes and scaling."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from . import filters, geometry, limits
from .errors import ImagingError
from .image import Display, Image, NiftiForms

# Voxel data starts after the 348/540-byte header and its extensions; further than this is corrupt.
MAX_VOX_OFFSET = 1024**3

_RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    gzip.BadGzipFile,
    nib.filebasedimages.ImageFileError,
)


def _load(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    try:
        img = nib.load(path)
    except _READ_ERRORS as exc:
        raise ImagingError(f"NIfTI file could not be read: {exc}") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImagingError("File is not a single-file NIfTI image")
    check_header(img, path)
    return img


def check_header(img: nib.Nifti1Image | nib.Nifti2Image, path: Path) -> None:
    """Refuse, before any voxel is read, a header whose shape is empty, negative or too large, whose
    voxel data lies outside the file, or whose affine is not finite."""
    shape = img.shape
    if not 2 <= len(shape) <= 5:
        raise ImagingError(f"NIfTI image has {len(shape)} dimensions; 2 to 5 are supported")
    stored = img.get_data_dtype()
    samples = 3 if stored == _RGB24 else 1
    limits.check_volume_size("NIfTI image", shape, samples=samples)
    offset = int(img.dataobj.offset)
    if not 0 <= offset <= MAX_VOX_OFFSET:
        raise ImagingError(f"NIfTI header is corrupt: its voxel data offset ({offset}) is not plausible")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    size = path.stat().st_size
    needed = offset + math.prod(shape) * stored.itemsize
    if not gzipped and needed > size:
        raise ImagingError(
            f"NIfTI file is truncated: its header needs {needed} bytes, the file has {size}"
        )
    if gzipped:  # the header says how much the stream must inflate to: refuse a bomb before it does
        floor = limits.IMAGE_INFLATE_RATIO_FLOOR
        limits.check_inflated_size("gzip-compressed NIfTI file", needed, size, floor)
    limits.check_memory("NIfTI image", math.prod(shape) * samples, stored.itemsize / samples, "volume")
    if not np.all(np.isfinite(img.affine)):
        raise ImagingError("NIfTI header is corrupt: its voxel-to-world affine is not finite")


def describe(img: nib.Nifti1Image | nib.Nifti2Image) -> dict[str, Any]:
    header = img.header
    _, qform_code = header.get_qform(coded=True)
    _, sform_code = header.get_sform(coded=True)
    # nibabel moves scl_slope/scl_inter from the loaded header into the data proxy
    slope = getattr(img.dataobj, "slope", None)
    inter = getattr(img.dataobj, "inter", None)
    space, time = header.get_xyzt_units()
    facts = {
        "format": "nifti",
        "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
        "stored_dtype": str(img.get_data_dtype()),
        "qform_code": int(qform_code),
        "sform_code": int(sform_code),
        "scl_slope": None if slope is None else float(slope),
        "scl_inter": None if inter is None else float(inter),
        "zooms": [float(z) for z in header.get_zooms()],
        "xyzt_units": [space, time],
        "description": header["descrip"].item().decode("latin-1").replace("\x00", " ").strip() or None,
        "orientation": "".join(nib.aff2axcodes(img.affine)),
    }
    return {k: v for k, v in facts.items() if v is not None}


def inspect_nifti(path: Path) -> dict[str, Any]:
    img = _load(path)
    meta = describe(img)
    meta["shape"] = [int(n) for n in img.shape]
    return meta


def read_nifti(path: Path) -> Image:
    img = _load(path)
    meta = describe(img)
    stored = img.get_data_dtype()
    try:
        if stored == _RGB24:
            raw = np.asanyarray(img.dataobj)
            data = np.stack([raw["R"], raw["G"], raw["B"]], axis=-1)
            samples = "RGB"
        else:
            samples = "L"
            unscaled = meta.get("scl_slope") in (None, 1.0) and meta.get("scl_inter") in (None, 0.0)
            if stored.kind in "iu" and unscaled:
                # whole numbers already in real units: keep the integer type (native byte order)
                data = np.asanyarray(img.dataobj).astype(stored.newbyteorder("="), copy=False)
            else:
                data = img.get_fdata(dtype=np.float32)  # scl_slope / scl_inter applied
    except _READ_ERRORS as exc:
        raise ImagingError(f"NIfTI file is truncated or corrupt: {exc}") from None
    while data.ndim < 3:  # a 2D NIfTI is a one-slice volume
        data = data[..., np.newaxis]
    if samples == "L" and data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]  # NIfTI keeps vector components on the 5th axis
    affine = img.affine.astype(np.float64)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    header = img.header
    forms = NiftiForms(
        qform=header.get_qform().astype(np.float64),
        qform_code=int(header["qform_code"]),
        sform=header.get_sform().astype(np.float64),
        sform_code=int(header["sform_code"]),
        affine=affine.copy(),
    )
    return Image(
        data=data,
        kind="volume",
        affine=affine,
        spacing=zooms,
        samples=samples,
        display=Display(native=False),
        metadata=meta,
        nifti_forms=forms,
    )


def output_forms(image: Image) -> tuple[np.ndarray, int, np.ndarray, int]:
    """(qform, qform_code, sform, sform_code) for a result on ``image``'s grid.

    A NIfTI input's own qform and sform are carried over to the result's grid, each keeping its
    code (the voxel-to-voxel map from the result's grid to the input's applies to both); anything
    else gets its affine in both, coded scanner (1) unless the metadata says otherwise.
    """
    forms = image.nifti_forms
    if forms is not None and image.affine is not None:
        to_input_grid = np.linalg.solve(forms.affine, image.affine)
        return forms.qform @ to_input_grid, forms.qform_code, forms.sform @ to_input_grid, forms.sform_code
    affine = image.affine
    qform_code = int(image.metadata.get("qform_code", 1))
    sform_code = int(image.metadata.get("sform_code", 1))
    return affine, qform_code, affine, sform_code


def write_nifti(image: Image, path: Path, dtype: np.dtype | None = None) -> None:
    """Save a volume with its qform and sform (see ``output_forms``) and units; a 2D time series
    is saved as x, y, 1, t with the frame time as the time step."""
    if image.frames is not None:
        _write_frames(image, path, dtype)
        return
    data = _nifti_values(image, image.data, dtype)
    img = nib.Nifti1Image(data, image.affine)
    header = img.header
    qform, qform_code, sform, sform_code = output_forms(image)
    img.set_qform(qform, code=qform_code)
    img.set_sform(sform, code=sform_code)
    units = image.metadata.get("xyzt_units")
    if units:
        header.set_xyzt_units(*units)
    else:
        header.set_xyzt_units("mm", "sec")
    description = image.metadata.get("description")
    if description:
        header["descrip"] = description.encode("latin-1", "replace")[:79]
    zooms = image.metadata.get("zooms")
    if data.ndim > 3 and zooms and len(zooms) >= data.ndim:
        header.set_zooms(tuple(header.get_zooms()[:3]) + tuple(zooms[3 : data.ndim]))
    header.set_slope_inter(1.0, 0.0)  # values are written in real units
    nib.save(img, path)


def _nifti_values(image: Image, data: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    if image.samples == "RGB":
        rgb = filters.cast_like(data, np.uint8) if data.dtype != np.uint8 else data
        return np.ascontiguousarray(rgb).view(_RGB24)[..., 0]
    if dtype is not None:
        return data.astype(dtype, copy=False)
    return data


def frames_affine(image: Image) -> np.ndarray:
    """Voxel (column, row, 0, t) to RAS+ mm for a time series: the plane of a DICOM image without
    patient geometry (rows down, columns right), at its pixel spacing."""
    spacing = image.spacing or (1.0, 1.0)
    return geometry.dicom_affine(None, None, spacing, 1.0)


def _write_frames(image: Image, path: Path, dtype: np.dtype | None) -> None:
    # (row, column, frame[, sample]) -> (column, row, 1, frame[, sample])
    data = np.swapaxes(image.data, 0, 1)[:, :, np.newaxis]
    data = _nifti_values(image, np.ascontiguousarray(data), dtype)
    affine = frames_affine(image)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    header = img.header
    header.set_xyzt_units("mm", "msec")
    interval = image.frames.interval_ms if image.frames is not None else None
    header.set_zooms((*header.get_zooms()[:3], float(interval or 1.0)))
    header.set_slope_inter(1.0, 0.0)
    nib.save(img, path)
