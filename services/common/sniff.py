"""Decide a file's format from its first bytes (never from its name).

Pure function on bytes, shared by the gateway (to refuse junk before storing it) and the
processor (to pick a reader).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

# How many leading bytes `sniff` wants; fewer is fine for short files.
SNIFF_BYTES = 64 * 1024

PNG = "png"
JPEG = "jpeg"
DICOM = "dicom"
NIFTI = "nifti"
ZIP = "zip"

# The accepted formats in words, for the messages that refuse a file (gateway and processor).
ACCEPTED = "PNG, JPEG, DICOM, NIfTI (.nii, .nii.gz) or a ZIP of DICOM files"

MEDIA_TYPES = {
    PNG: "image/png",
    JPEG: "image/jpeg",
    DICOM: "application/dicom",
    NIFTI: "application/octet-stream",
    ZIP: "application/zip",
}

_SUFFIXES = {PNG: ".png", JPEG: ".jpg", DICOM: ".dcm", ZIP: ".zip"}

_DICOM_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}


def sniff(head: bytes) -> str | None:
    """Format of a file whose first bytes are `head`, or None when it is not one we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if is_dicom(head):
        return DICOM
    if is_nifti(head):
        return NIFTI
    if head.startswith(b"\x1f\x8b"):
        inner = _gunzip_head(head)
        return NIFTI if inner is not None and is_nifti(inner) else None
    if head.startswith(b"PK\x03\x04"):
        # A ZIP of a DICOM series: some member within the sniffed bytes must be DICOM.
        return ZIP if any(is_dicom(member) for member in _zip_member_heads(head)) else None
    return None


def suffix_for(head: bytes) -> str:
    """A file extension matching the content ("" when unknown): readers such as nibabel choose by
    extension, and a client's file name may have none or a misleading one."""
    fmt = sniff(head)
    if fmt == NIFTI:
        return ".nii.gz" if head.startswith(b"\x1f\x8b") else ".nii"
    return _SUFFIXES.get(fmt or "", "")


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 ("DICM" after the 128-byte preamble), or a bare data set without preamble."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack_from(order + "HH", head, 0)
        if group not in (0x0002, 0x0008) or element > 0x0100:
            continue
        if head[4:6] in _DICOM_VRS:  # explicit VR
            return True
        (length,) = struct.unpack_from(order + "I", head, 4)  # implicit VR: a sane element length
        if length < 1024:
            return True
    return False


def is_nifti(head: bytes) -> bool:
    """Single-file NIfTI-1 (n+1) or NIfTI-2 (n+2), either byte order."""
    if len(head) >= 348:
        for order in "<>":
            if struct.unpack_from(order + "i", head, 0)[0] == 348 and head[344:348] == b"n+1\x00":
                return True
    if len(head) >= 12:
        for order in "<>":
            if struct.unpack_from(order + "i", head, 0)[0] == 540 and head[4:8] == b"n+2\x00":
                return True
    return False


def _gunzip_head(data: bytes, want: int = 1024) -> bytes | None:
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return d.decompress(data, want)
    except zlib.error:
        return None


def _zip_member_heads(data: bytes, want: int = 1024) -> Iterator[bytes]:
    """Leading bytes of each regular file of a ZIP that starts within `data`, skipping folders,
    macOS metadata and DICOMDIR (a series export often has a README or an index before the slices)."""
    pos = 0
    while pos + 30 <= len(data) and data[pos : pos + 4] == b"PK\x03\x04":
        flags, method, csize = struct.unpack_from("<xxxxxxHH8xI", data, pos)
        name_len, extra_len = struct.unpack_from("<HH", data, pos + 26)
        name = data[pos + 30 : pos + 30 + name_len]
        start = pos + 30 + name_len + extra_len
        base = name.rsplit(b"/", 1)[-1]
        is_meta = name.endswith(b"/") or name.startswith(b"__MACOSX") or base.startswith(b".")
        if not is_meta and name.upper() != b"DICOMDIR" and base.upper() != b"DICOMDIR":
            body = data[start : start + (csize or want * 64)]
            if method == 0:
                yield body[:want]
            elif method == 8:
                try:
                    yield zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, want)
                except zlib.error:
                    pass
        if flags & 0x08 and csize == 0:
            # Sizes come after the data: the next member starts at the next local header.
            found = data.find(b"PK\x03\x04", start)
            if found < 0:
                return
            pos = found
        else:
            pos = start + csize
