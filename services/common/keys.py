"""Object keys and file names: the one place that builds, parses and checks them.

Every object of a job lives at ``{user_id}/{job_id}/{filename}``: the job's inputs (named by the
gateway from the client's file name) and its outputs (named by the jobs service's output stem), so
``GET /files/{user_id}/{job_id}/{filename}`` maps 1:1 to a key and deleting a job is deleting the
prefix ``{user_id}/{job_id}/``.

A file name is 1-200 characters of ``A-Z a-z 0-9 . _ -`` that does not start with a dot: one
storage key segment, safe in a path, a URL, a header and a log line. Client names are reduced to
such a name of at most 128 characters (``safe_filename``), which leaves room for the suffixes that
outputs add (``_processed.nii.gz``, ``_2``).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable
from typing import NamedTuple

from services.common.identity import is_valid_user_id

MAX_FILENAME_CHARS = 200
MAX_CLIENT_NAME_CHARS = 128
FILENAME_RULE = "1-200 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
_FILENAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")

# Longest first, so "scan.nii.gz" loses ".nii.gz" and not only ".gz".
IMAGE_EXTENSIONS = (".nii.gz", ".dicom", ".jpeg", ".nii", ".dcm", ".png", ".jpg", ".zip", ".ima", ".gz")
_DOUBLE_EXTENSIONS = (".nii.gz",)


class ObjectKey(NamedTuple):
    user_id: str
    job_id: str
    filename: str

    def __str__(self) -> str:
        return f"{self.user_id}/{self.job_id}/{self.filename}"


# --- the rules ---

def is_valid_filename(name: str) -> bool:
    return bool(_FILENAME.fullmatch(name))


def is_valid_job_id(job_id: str) -> bool:
    """A job id is a UUID in its canonical lower-case form."""
    try:
        return str(uuid.UUID(job_id)) == job_id
    except (ValueError, TypeError, AttributeError):
        return False


def object_key(user_id: str, job_id: str, filename: str) -> str:
    """The key of one of a job's files; ValueError naming the part that breaks the rules."""
    if not is_valid_user_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}")
    if not is_valid_job_id(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    if not is_valid_filename(filename):
        raise ValueError(f"invalid file name {filename!r}: {FILENAME_RULE}")
    return f"{user_id}/{job_id}/{filename}"


def job_prefix(user_id: str, job_id: str) -> str:
    """The folder of every object of a job (what DeleteJob removes)."""
    if not is_valid_user_id(user_id) or not is_valid_job_id(job_id):
        raise ValueError(f"invalid job folder {user_id!r}/{job_id!r}")
    return f"{user_id}/{job_id}/"


def parse_key(key: str) -> ObjectKey:
    """Split a job object's key into its parts; ValueError when it is not one."""
    parts = key.split("/")
    if len(parts) != 3:
        raise ValueError(f"{key!r} is not user_id/job_id/filename")
    object_key(*parts)  # the same checks as when it was built
    return ObjectKey(*parts)


def job_folder_of(key: str) -> tuple[str, str] | None:
    """(user_id, job_id) when `key` lies inside a job's folder ``{user_id}/{job_id}/`` (whatever
    follows it: the janitor removes a folder with everything in it); None for any other key."""
    user_id, _, rest = key.partition("/")
    job_id, _, name = rest.partition("/")
    if not name or not is_valid_user_id(user_id) or not is_valid_job_id(job_id):
        return None
    return user_id, job_id


def is_key_of_job(key: str, user_id: str, job_id: str) -> bool:
    """True when `key` names a file inside that job's own folder (and nowhere else)."""
    try:
        parsed = parse_key(key)
    except ValueError:
        return False
    return parsed.user_id == user_id and parsed.job_id == job_id


# --- names from clients ---

def split_extension(name: str) -> tuple[str, str]:
    """("scan", ".nii.gz"), ("photo", ".png"), ("README", ""); a leading dot is not an extension."""
    lower = name.lower()
    for ext in _DOUBLE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def _fit(stem: str, ext: str, limit: int = MAX_CLIENT_NAME_CHARS) -> str:
    if len(ext) >= limit:  # a silly "extension": keep the start instead
        return (stem + ext)[:limit]
    return stem[: limit - len(ext)] + ext


def safe_filename(raw: str) -> str:
    """A client's file name reduced to a valid file name: the base name only (never a path), unsafe
    characters as "_", no leading dot, at most 128 characters, the extension kept."""
    base = re.split(r"[/\\]", raw)[-1]
    base = "".join(c for c in base if unicodedata.category(c) != "Cc")
    base = _UNSAFE_CHAR.sub("_", base).lstrip(".")
    stem, ext = split_extension(base)
    return _fit(stem, ext) or "file"


def unique_filename(name: str, taken: set[str]) -> str:
    """`name`, or name-1, name-2 ... (before the extension) when `taken` (lower-cased names already
    in the job) has it: compared case-insensitively so a case-insensitive file system cannot merge
    two inputs."""
    if name.lower() not in taken:
        return name
    stem, ext = split_extension(name)
    n = 1
    while True:
        suffix = f"-{n}"
        candidate = _fit(stem[: max(0, MAX_CLIENT_NAME_CHARS - len(ext) - len(suffix))] + suffix, ext)
        if candidate.lower() not in taken:
            return candidate
        n += 1


# --- output names ---

def strip_image_extension(filename: str) -> str:
    lower = filename.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(filename) > len(ext):
            return filename[: -len(ext)]
    return filename


# Output name = stem + one of these suffixes (docs/design.md, Object keys). The processor may write
# any of them; the jobs service picks stems so that none equals an input or another task's output.
OUTPUT_SUFFIXES = {
    "processed_png": "_processed.png",
    "processed_jpeg": "_processed.jpg",
    "processed_nifti": "_processed.nii.gz",
    "processed_zip": "_processed.zip",
    "processed_dicom": "_processed.dcm",
    "preview_png": "_preview.png",
    "preview_coronal_png": "_preview_coronal.png",
    "preview_sagittal_png": "_preview_sagittal.png",
    "preview_coronal_jpeg": "_preview_coronal.jpg",
    "preview_sagittal_jpeg": "_preview_sagittal.jpg",
    "input_png": "_input.png",
    "input_nifti": "_input.nii.gz",
    "values_nifti": "_values.nii.gz",
    "input_values_nifti": "_input_values.nii.gz",
}


# What an output is to its task (TaskResult.outputs[].role): the result, its previews, the input as
# a browser can show it, and both in real units for windowing (docs/design.md, Object keys).
OUTPUT_ROLES = frozenset({"primary", "preview", "input", "values", "input_values"})


def output_name(stem: str, kind: str) -> str:
    """The name of one output of a task: output_name("scan", "processed_png") == "scan_processed.png"."""
    return stem + OUTPUT_SUFFIXES[kind]


def output_names(stem: str) -> tuple[str, ...]:
    """Every name a task with this stem may write."""
    return tuple(stem + suffix for suffix in OUTPUT_SUFFIXES.values())


SERIES_NAME_CHARS = 40


def series_name(words: str, index: int) -> str:
    """A series' words for output names ("s3 T1 axial" -> "s3_T1_axial"): safe characters only, at
    most SERIES_NAME_CHARS; without usable words, "series<index + 1>"."""
    cleaned = re.sub(r"_+", "_", _UNSAFE_CHAR.sub("_", words)).strip("._-")[:SERIES_NAME_CHARS]
    return cleaned.strip("._-") or f"series{index + 1}"


def series_stem_base(filename: str, name: str) -> str:
    """The stem base of the task of one series of a ZIP input: the input's name without its
    extension, then the series' name (room is left for the longest output suffix)."""
    return f"{strip_image_extension(filename).strip('.')[:MAX_CLIENT_NAME_CHARS - 8] or 'output'}_{name}"


def choose_output_stems(filenames: Iterable[str], bases: Iterable[str | None] | None = None) -> list[str]:
    """One stem per task: the name of its input without its image extension (or ``bases[i]`` when
    given, e.g. a series' stem base), suffixed "_2", "_3", ... until no output of it equals an input
    name or another task's output (case-insensitively). Several tasks may share an input name."""
    filenames = list(filenames)
    given = list(bases) if bases is not None else [None] * len(filenames)
    taken = {name.casefold() for name in filenames}
    stems: list[str] = []
    for name, chosen in zip(filenames, given, strict=True):
        base = chosen or strip_image_extension(name).strip(".") or "output"
        stem, n = base, 1
        while any(out.casefold() in taken for out in output_names(stem)):
            n += 1
            stem = f"{base}_{n}"
        taken.update(out.casefold() for out in output_names(stem))
        stems.append(stem)
    return stems


def is_valid_stem(stem: str) -> bool:
    """A stem must give valid output names (the longest suffix included)."""
    longest = max(OUTPUT_SUFFIXES.values(), key=len)
    return is_valid_filename(stem + longest)
