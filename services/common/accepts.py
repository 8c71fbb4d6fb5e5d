"""What an operation accepts: the vocabulary of the catalogue's `accepts` list, shared by the
processor (which declares and enforces it per task) and the gateway (which refuses a job whose
files an operation does not take, before anything is queued).

`accepts` lists input kinds first (from decoding: "2d", "3d"), then file formats (from the first
bytes, services/common/sniff.py, in the catalogue's words).
"""

from __future__ import annotations

from services.common import sniff

KINDS = ("2d", "3d")
FORMATS = ("png", "jpeg", "dicom", "nifti", "dicom_series")
KIND_WORDS = {"2d": "2D image", "3d": "3D volume"}
FORMAT_WORDS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "dicom": "DICOM",
    "nifti": "NIfTI",
    "dicom_series": "DICOM series (ZIP)",
}
_FORMAT_OF_FILE = {
    sniff.PNG: "png",
    sniff.JPEG: "jpeg",
    sniff.DICOM: "dicom",
    sniff.NIFTI: "nifti",
    sniff.ZIP: "dicom_series",
}


def format_of_file(sniffed: str) -> str:
    """A sniffed file format ("zip", ...) in the catalogue's words ("dicom_series", ...)."""
    return _FORMAT_OF_FILE.get(sniffed, sniffed)


def ordered(given: tuple[str, ...] | list[str], vocabulary: tuple[str, ...]) -> list[str]:
    return [name for name in vocabulary if name in given]


def words(names: list[str], vocabulary: dict[str, str]) -> str:
    said = [vocabulary[n] for n in names]
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} or {said[-1]}"


def format_refusal(operation: str, sniffed: str, accepts: tuple[str, ...] | list[str]) -> str | None:
    """None when `operation` (whose catalogue `accepts` is given) takes a file of this format,
    else the sentence that says why not."""
    fmt = format_of_file(sniffed)
    formats = ordered(accepts, FORMATS)
    if fmt in formats:
        return None
    return (f"{operation} does not accept {FORMAT_WORDS.get(fmt, fmt)} files; it accepts "
            f"{words(formats, FORMAT_WORDS)}")


# The kinds Inspect reports ("2d", "volume") in the catalogue's words.
_KIND_OF_INSPECTION = {"2d": "2d", "volume": "3d"}


def kind_of_inspection(kind: object) -> str | None:
    """ProcessorService.Inspect's `kind` ("2d", "volume") as `accepts` names it ("2d", "3d")."""
    return _KIND_OF_INSPECTION.get(kind) if isinstance(kind, str) else None


def kind_refusal(operation: str, kind: str, accepts: tuple[str, ...] | list[str]) -> str | None:
    """None when `operation` takes an input of this kind ("2d" or "3d"), else the sentence that says
    why not."""
    kinds = ordered(accepts, KINDS)
    if kind in kinds:
        return None
    return f"{operation} does not accept a {KIND_WORDS[kind]}; it needs a {words(kinds, KIND_WORDS)}"
