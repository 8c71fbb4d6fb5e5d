"""anonymize: DICOM de-identification by the PS3.15 Basic Application Level Confidentiality Profile."""

from __future__ import annotations

import uuid
from typing import Any

from services.common import sniff
from services.common.config import Settings
from services.common.keys import output_name
from services.processor import imaging
from services.processor.imaging import io_dicom, io_dicom_write, io_series
from services.processor.imaging.outputs import MEDIA_TYPES, write_views
from services.processor.operations.registry import FileTask, Operation, OperationError, register
from services.processor.operations.schema import params_schema

SECRET_SETTING = "RADIOLOGY_ANONYMIZE_SECRET"
MIN_SECRET_CHARS = 32


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot key the UID replacement, in words for users and operators; None if it can."""
    if not secret:
        return (
            f"{SECRET_SETTING} is not set on this processor: anonymize replaces UIDs with a keyed "
            f"hash and cannot run without that server secret (the same long random value on every "
            f"processor replica; see docs/imaging.md)"
        )
    if len(secret) < MIN_SECRET_CHARS:
        return (
            f"{SECRET_SETTING} is too short ({len(secret)} characters): it needs at least "
            f"{MIN_SECRET_CHARS}, a long random value, the same on every processor replica"
        )
    return None


def uid_map(job_id: str, secret: str) -> io_dicom_write.UidMap:
    """UIDs replaced the same way in every task of a job (series stay series, references stay
    valid across the job's files), whichever replica runs it, and differently in another job; keyed
    by the server secret, so the job id alone does not let anyone recompute them. Raises
    OperationError, naming the setting, when the secret is missing or too short: never a UID that
    could be derived without it."""
    problem = secret_problem(secret)
    if problem is not None:
        raise OperationError(problem)
    return io_dicom_write.UidMap(secret, job_id or str(uuid.uuid4()))


def anonymize(task: FileTask) -> dict[str, Any]:
    uids = uid_map(task.job_id, Settings().anonymize_secret)
    reports: list[io_dicom_write.AnonymizationReport] = []

    def transform(ds: Any) -> io_dicom_write.AnonymizationReport:
        report = io_dicom_write.anonymize(ds, uids)
        reports.append(report)
        return report

    if task.file_format == sniff.DICOM:
        target = task.out_dir / output_name(task.stem, "processed_dicom")
        ds = io_dicom.read_dataset(task.input_path)
        transform(ds)
        meta = getattr(ds, "file_meta", None)
        ds.save_as(target, enforce_file_format=meta is not None and "TransferSyntaxUID" in meta)
        primary = {
            "filename": target.name,
            "path": str(target),
            "media_type": MEDIA_TYPES["dicom"],
            "role": "primary",
        }
        files = 1
    else:
        target = task.out_dir / output_name(task.stem, "processed_zip")
        files, _ = io_series.anonymize_zip(task.input_path, target, transform, task.series_instance_uid)
        primary = {
            "filename": target.name,
            "path": str(target),
            "media_type": MEDIA_TYPES["zip"],
            "role": "primary",
        }

    warnings: list[str] = []
    for report in reports:
        warnings.extend(w for w in report.warnings if w not in warnings)
    totals = {
        key: sum(getattr(r, key) for r in reports)
        for key in ("removed", "emptied", "dummied", "uids_replaced", "private_removed")
    }
    outputs = [primary]
    metadata: dict[str, Any] = {
        "format": "dicom" if task.file_format == sniff.DICOM else "zip",
        "files": files,
        "profile": io_dicom_write.DEIDENTIFICATION_METHOD,
        "anonymization": totals,
        "pixel_data": "unchanged",
    }
    try:  # previews of the de-identified file itself; its pixels are the input's
        result = imaging.load(target)
    except imaging.ImagingError as exc:
        warnings.append(f"No preview: the pixel data could not be decoded ({exc})")
    else:
        outputs.extend(write_views(result, task.out_dir, task.stem))
        # what the other operations report of their input, read from the de-identified file: no
        # value the profile removed or replaced comes back through the metadata
        described = {**result.metadata, **imaging.summary(result)}
        described.pop("warnings", None)
        metadata = {**described, **metadata}
    if warnings:
        metadata["warnings"] = warnings
    return {"outputs": outputs, "metadata": metadata}


register(
    Operation(
        name="anonymize",
        title="Anonymize (DICOM de-identification)",
        description="De-identifies DICOM by the Basic Application Level Confidentiality Profile of "
        "DICOM PS3.15 Annex E: every attribute of its table removed, emptied, replaced by a dummy or "
        "(UIDs) replaced consistently within the job, in nested sequences too; private attributes "
        "removed; PatientIdentityRemoved YES and the method recorded. Pixel data is unchanged: a "
        "warning says when text may be burned into the pixels. A ZIP keeps its DICOM images only, "
        "renamed 0001.dcm upwards.",
        params_schema=params_schema({}, output_format=None),
        outputs="DICOM: the de-identified .dcm (a ZIP of them for a ZIP input) plus PNG previews",
        apply=None,
        run_file=anonymize,
        formats=("dicom", "dicom_series"),
    )
)
