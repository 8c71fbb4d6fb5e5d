"""Writing DICOM: derived images, volumes as series, de-identification. Checked by reading the files
back with pydicom (and our own series reader), against nibabel's view of the source and the rows
of PS3.15 Table E.1-1."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.tag import Tag

from services.processor import imaging
from services.processor.imaging import filters, geometry, io_dicom_write
from services.processor.imaging.frames import per_frame
from services.processor.imaging.io_dicom_write import UidMap, anonymize, profile_rules, tag_of
from tests.processor.conftest import ANONYMIZE_SECRET
from tests.processor.imaging.helpers import NIBABEL_DATA, dicom_file

# -- derived images --------------------------------------------------------------------------------


def test_derived_ct_keeps_patient_study_geometry_and_units(tmp_path: Path) -> None:
    source_path = dicom_file("CT_small.dcm")
    source = pydicom.dcmread(source_path)
    image = imaging.load(source_path)
    blurred = image.with_data(filters.gaussian_blur(image.data, (2.0, 2.0)))
    params = {"sigma": 2.0}
    ds = io_dicom_write.derived_image(source, blurred, operation="blur", params=params)
    path = io_dicom_write.write_dataset(ds, tmp_path / "derived.dcm")

    back = pydicom.dcmread(path)  # a valid Part 10 file: no force needed
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.SOPInstanceUID != source.SOPInstanceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.PatientID == source.PatientID and back.PatientName == source.PatientName
    assert back.SOPClassUID == source.SOPClassUID and back.Modality == "CT"
    assert list(back.ImageType) == ["DERIVED", "SECONDARY"]
    assert back.DerivationDescription == 'blur {"sigma":2.0}'
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert back.FrameOfReferenceUID == source.FrameOfReferenceUID
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        written, given = back[keyword].value, source[keyword].value
        np.testing.assert_allclose([float(v) for v in written], [float(v) for v in given])
    real = apply_modality_lut(back.pixel_array, back)  # pydicom's own modality LUT
    step = float(back.RescaleSlope)
    assert np.abs(real - blurred.data.astype(np.float64)).max() <= step / 2 + 1e-9
    assert step < 0.1  # 16 bits over the blurred CT's range: finer than a tenth of a HU


def test_derived_image_with_whole_values_is_exact(tmp_path: Path) -> None:
    source = pydicom.dcmread(dicom_file("CT_small.dcm"))
    image = imaging.load(dicom_file("CT_small.dcm"))
    ds = io_dicom_write.derived_image(source, image, operation="convert", params={"format": "dicom"})
    back = pydicom.dcmread(io_dicom_write.write_dataset(ds, tmp_path / "same.dcm"))
    assert back.RescaleSlope == 1 and back.PixelRepresentation == 1
    assert np.array_equal(apply_modality_lut(back.pixel_array, back), image.data)


def test_resized_derived_image_keeps_the_field_of_view(tmp_path: Path) -> None:
    source = pydicom.dcmread(dicom_file("CT_small.dcm"))
    image = imaging.load(dicom_file("CT_small.dcm"))
    rows, cols = image.data.shape
    new = (50, 80)
    spacing = (image.spacing[0] * rows / new[0], image.spacing[1] * cols / new[1])
    resized = image.with_data(filters.resample_linear(image.data, new), spacing=spacing)
    ds = io_dicom_write.derived_image(source, resized, operation="resize", params={"width": 80, "height": 50})
    back = pydicom.dcmread(io_dicom_write.write_dataset(ds, tmp_path / "resized.dcm"))
    assert (back.Rows, back.Columns) == new

    def corner(d: Dataset) -> np.ndarray:  # outer corner of the first pixel, LPS mm
        o = np.array([float(v) for v in d.ImageOrientationPatient])
        row_sp, col_sp = (float(v) for v in d.PixelSpacing)
        return np.array([float(v) for v in d.ImagePositionPatient]) - o[:3] * col_sp / 2 - o[3:] * row_sp / 2

    np.testing.assert_allclose(corner(back), corner(source), atol=1e-3)


def test_colour_result_becomes_secondary_capture(tmp_path: Path) -> None:
    source = pydicom.dcmread(dicom_file("CT_small.dcm"))
    rgb = np.zeros((8, 6, 3), np.uint8)
    rgb[..., 0] = 200
    image = imaging.Image(data=rgb, kind="2d", samples="RGB", display=imaging.Display(native=True))
    ds = io_dicom_write.derived_image(source, image, operation="edges", params={}, keep_geometry=False)
    back = pydicom.dcmread(io_dicom_write.write_dataset(ds, tmp_path / "rgb.dcm"))
    assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert back.PhotometricInterpretation == "RGB" and np.array_equal(back.pixel_array, rgb)
    assert back.StudyInstanceUID == source.StudyInstanceUID


# -- a volume as a series --------------------------------------------------------------------------


def _oblique_float_nifti(tmp_path: Path) -> Path:
    angle = np.deg2rad(15)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [-60.0, 40.5, -20.25]
    data = np.random.default_rng(3).normal(40.0, 300.0, (12, 10, 7)).astype(np.float32)
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _pydicom_affine(slices: list[Dataset]) -> np.ndarray:
    """The series' voxel-to-RAS affine from its headers alone, the textbook way (PS3.3 C.7.6.2.1.1)."""
    o = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    row_sp, col_sp = (float(v) for v in slices[0].PixelSpacing)
    first = np.array([float(v) for v in slices[0].ImagePositionPatient])
    last = np.array([float(v) for v in slices[-1].ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0] = o[:3] * col_sp
    lps[:3, 1] = o[3:] * row_sp
    lps[:3, 2] = (last - first) / (len(slices) - 1)
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("which", ["oblique_float", "anatomical"])
def test_volume_series_round_trip(which: str, tmp_path: Path) -> None:
    nifti = _oblique_float_nifti(tmp_path) if which == "oblique_float" else NIBABEL_DATA / "anatomical.nii"
    reference = nib.load(nifti)
    expected = reference.get_fdata()
    image = imaging.load(nifti)
    out = io_dicom_write.write_volume_series(image, tmp_path / "series.zip", operation="convert", params={})

    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        slices = [pydicom.dcmread(zf.open(n)) for n in names]
    assert len(slices) == expected.shape[2]
    assert len({s.SeriesInstanceUID for s in slices}) == 1
    assert len({s.SOPInstanceUID for s in slices}) == len(slices)
    assert [int(s.InstanceNumber) for s in slices] == list(range(1, len(slices) + 1))
    assert {(str(s.RescaleSlope), str(s.RescaleIntercept)) for s in slices} == {
        (str(slices[0].RescaleSlope), str(slices[0].RescaleIntercept))
    }
    np.testing.assert_allclose(_pydicom_affine(slices), reference.affine, atol=1e-3)
    step = float(slices[0].RescaleSlope)
    for k, s in enumerate(slices):  # pydicom's values, slice k = voxel plane k, rows = j
        real = apply_modality_lut(s.pixel_array, s)
        assert np.abs(real - expected[:, :, k].T).max() <= step / 2 + 1e-6
        assert float(s.SliceThickness) == pytest.approx(geometry.voxel_sizes(reference.affine)[2], abs=1e-4)

    # our own series reader stacks along the slice normal, which may run against the source's
    # third axis (a left-handed voxel grid, like anatomical.nii's): compare in canonical RAS+ order
    ours = imaging.load(out)
    read = nib.as_closest_canonical(nib.Nifti1Image(ours.data.astype(np.float64), ours.affine))
    truth = nib.as_closest_canonical(nib.Nifti1Image(expected, reference.affine))
    np.testing.assert_allclose(read.affine, truth.affine, atol=1e-3)
    assert np.abs(read.get_fdata() - truth.get_fdata()).max() <= step / 2 + 1e-6
    if which == "anatomical":  # whole numbers: stored exactly
        assert step == 1 and np.array_equal(read.get_fdata(), truth.get_fdata())


# -- de-identification -----------------------------------------------------------------------------

_PHI_BY_VR = {
    "AE": "PHI_AE",
    "AS": "042Y",
    "AT": Tag(0x0010, 0x0010),
    "CS": "PHI",
    "DA": "19710203",
    "DT": "19710203040506",
    "TM": "040506",
    "DS": "12.5",
    "IS": "42",
    "LO": "Secret Hospital",
    "LT": "John Doe has a cough",
    "PN": "Doe^John",
    "SH": "JD-1",
    "ST": "call 555 0100",
    "UC": "phi",
    "UT": "phi",
    "UR": "http://example.org/patient/1",
    "FL": 1.5,
    "FD": 2.5,
    "SL": 7,
    "SS": 7,
    "UL": 7,
    "US": 7,
    "SV": 7,
    "UV": 7,
    "OB": b"PHI!",
    "OW": b"PHI!",
    "OF": b"PHI!",
    "OD": b"PHI!PHI!",
    "OL": b"PHI!",
    "OV": b"PHI!PHI!",
    "UN": b"PHI!",
}


def _phi_value(tag: int, vr: str, k: int):
    if vr == "UI":
        return f"1.2.840.99999.{k}"
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "Doe^Nested"
        item.ReferencedSOPInstanceUID = f"1.2.840.88888.{k}"
        item.ReferencedSOPClassUID = pydicom.uid.CTImageStorage
        return [item]
    return _PHI_BY_VR[vr]


def _filled_with_phi() -> tuple[Dataset, dict[int, object]]:
    """A data set holding a value in every attribute of Table E.1-1 (repeating groups at 5000/6000),
    plus a private block and pixel data."""
    ds = Dataset()
    originals: dict[int, object] = {}
    for k, rule in enumerate(profile_rules()):
        tag = tag_of(rule)
        if tag is None:
            if rule.tag == "(50XX,XXXX)":
                tag = Tag(0x5000, 0x3000)  # Curve Data
            elif rule.tag.startswith("(60XX"):
                tag = Tag(0x6000, int(rule.tag[6:10], 16))
            else:
                continue  # private attributes: below
        vr = dictionary_VR(tag).split(" ")[0]
        value = _phi_value(int(tag), vr, k)
        ds.add_new(tag, vr, value)
        originals[int(tag)] = value
    block = ds.private_block(0x0009, "ACME PHI", create=True)
    block.add_new(0x01, "LO", "Doe^John private")
    ds.BurnedInAnnotation = "YES"
    ds.PixelData = bytes(range(256)) * 4
    return ds, originals


def _survives(value, original) -> bool:
    if value in (None, "", b"") or (isinstance(value, list | pydicom.multival.MultiValue) and not value):
        return False
    return value == original


def test_no_attribute_of_the_profile_keeps_its_value() -> None:
    ds, originals = _filled_with_phi()
    assert len(originals) >= 600  # the whole table, not a sample
    pixels = ds.PixelData
    report = anonymize(ds, UidMap(ANONYMIZE_SECRET, "job-1"))
    for tag, original in originals.items():
        if tag not in ds:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":  # kept sequences are cleaned inside
            for item in elem.value:
                assert str(item.get("PatientName") or "") != "Doe^Nested"
                assert not str(item.get("ReferencedSOPInstanceUID", "")).startswith("1.2.840.88888.")
            continue
        assert not _survives(elem.value, original), f"{Tag(tag)} {elem.keyword} kept {elem.value!r}"
    assert not any(elem.tag.is_private for elem in ds)
    assert ds.PixelData == pixels
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == io_dicom_write.DEIDENTIFICATION_METHOD
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert report.private_removed >= 1 and any("Burned In Annotation is YES" in w for w in report.warnings)


def test_sequences_given_a_dummy_keep_no_identifying_text_in_their_items(tmp_path: Path) -> None:
    """Table E.1-1 gives D (or a compound resolved to D) to sequences whose items hold attributes
    that are not rows of the table themselves: a code's meaning (an institution, a person), an SR
    content item's text, a graphic annotation's text. None of that text may reach the written file;
    UIDs in the items are replaced as elsewhere (the same original, the same new one), the
    standard's own UIDs kept."""
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    referenced = str(ds.SOPInstanceUID)
    secrets = ["St Secret Hospital", "SECRETHOSP42", "Dr Indiana Jones", "DRJONES7", "John Doe coughs",
               "Doe John 1970", "Jane Roe", "SECRETPPS9"]

    def code(value: str, meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
        return item

    dummied = [int(tag_of(r)) for r in profile_rules() if r.action in ("D", "X/D", "X/Z/D", "Z/D")
               and tag_of(r) is not None and dictionary_VR(tag_of(r)) == "SQ"]
    assert {0x00080082, 0x00081072, 0x00401101, 0x0040A730, 0x00700001} <= set(dummied)
    ds.InstitutionCodeSequence = [code("SECRETHOSP42", "St Secret Hospital")]
    operator = Dataset()
    operator.PersonIdentificationCodeSequence = [code("DRJONES7", "Dr Indiana Jones")]
    ds.OperatorIdentificationSequence = [operator]
    step = Dataset()
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step SOP Class
    step.ReferencedSOPInstanceUID = "1.2.840.99999.77"
    step.PerformedProcedureStepID = "SECRETPPS9"
    ds.ReferencedPerformedProcedureStepSequence = [step]
    text, person, image = Dataset(), Dataset(), Dataset()
    text.ValueType, text.TextValue = "TEXT", "John Doe coughs"
    text.ConceptNameCodeSequence = [code("121071", "Finding")]
    person.ValueType, person.PersonName = "PNAME", "Roe^Jane"
    person.ConceptNameCodeSequence = [code("121008", "Jane Roe")]
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = ds.SOPClassUID, referenced
    image.ValueType, image.ReferencedSOPSequence = "IMAGE", [reference]
    ds.ContentSequence = [text, person, image]
    words = Dataset()
    words.UnformattedTextValue = "Doe John 1970"
    annotation = Dataset()
    annotation.TextObjectSequence = [words]
    ds.GraphicAnnotationSequence = [annotation]

    report = anonymize(ds, UidMap(ANONYMIZE_SECRET, "job-11"))
    ds.save_as(tmp_path / "anon.dcm", enforce_file_format=True)
    written = (tmp_path / "anon.dcm").read_bytes()
    for secret in secrets:
        assert secret.encode() not in written, secret
    assert b"Roe^Jane" not in written and b"1.2.840.99999.77" not in written
    back = pydicom.dcmread(tmp_path / "anon.dcm")
    assert len(back.ContentSequence) == 3 and len(back.InstitutionCodeSequence) == 1  # D: items kept
    assert back.InstitutionCodeSequence[0].CodeMeaning == "ANONYMOUS"
    step_back = back.ReferencedPerformedProcedureStepSequence[0]
    assert step_back.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.3"  # the standard's own UID
    assert step_back.ReferencedSOPInstanceUID == UidMap(ANONYMIZE_SECRET, "job-11")("1.2.840.99999.77")
    # the content item's reference to this image follows the image's new UID exactly
    assert back.ContentSequence[2].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == back.SOPInstanceUID
    assert back.SOPInstanceUID != referenced
    assert report.dummied >= 5


def test_uids_are_replaced_consistently_within_a_job(tmp_path: Path) -> None:
    first = pydicom.dcmread(dicom_file("CT_small.dcm"))
    second = pydicom.dcmread(dicom_file("CT_small.dcm"))
    second.SOPInstanceUID = pydicom.uid.generate_uid()  # another slice of the same series
    uids = UidMap(ANONYMIZE_SECRET, "job-7")
    anonymize(first, uids)
    anonymize(second, UidMap(ANONYMIZE_SECRET, "job-7"))  # another process of the same job
    assert first.StudyInstanceUID == second.StudyInstanceUID != "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    other_job = pydicom.dcmread(dicom_file("CT_small.dcm"))
    anonymize(other_job, UidMap(ANONYMIZE_SECRET, "job-8"))
    assert other_job.StudyInstanceUID != first.StudyInstanceUID
    assert pydicom.uid.UID(first.StudyInstanceUID).is_valid


ORIGINAL_UID = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"  # CT_small's Study Instance UID
JOB = "0b0e2f3c-5a4d-4e5f-8a9b-1c2d3e4f5a6b"


def _spec_uid(secret: bytes, job_id: str, uid: str) -> str:
    """The derivation as docs/imaging.md states it, written out independently of the code."""
    fields = [b"radiology anonymize UID v1", job_id.encode(), uid.encode()]
    message = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    top = bytearray(hmac.new(secret, message, hashlib.sha256).digest()[:16])
    top[6] = (top[6] & 0x0F) | 0x80  # UUID version 8
    top[8] = (top[8] & 0x3F) | 0x80  # RFC 4122 variant
    return "2.25." + str(int.from_bytes(top, "big"))


def test_new_uids_are_a_keyed_hash_of_job_and_uid_under_the_server_secret() -> None:
    uids = UidMap(ANONYMIZE_SECRET, JOB)
    new = uids(ORIGINAL_UID)
    assert new == _spec_uid(ANONYMIZE_SECRET.encode(), JOB, ORIGINAL_UID)
    assert UidMap(ANONYMIZE_SECRET, JOB)(ORIGINAL_UID) == new  # another call, another task of the job
    assert UidMap(ANONYMIZE_SECRET.encode(), JOB)(ORIGINAL_UID) == new
    assert UidMap(ANONYMIZE_SECRET + "x", JOB)(ORIGINAL_UID) != new  # another secret
    assert UidMap(ANONYMIZE_SECRET, JOB + "x")(ORIGINAL_UID) != new  # another job
    assert uids(ORIGINAL_UID + "1") != new
    # The job id and the original UID alone do not give it: neither the old unkeyed derivation
    # (uuid5 of the job id and the UID) nor any hash of them without the secret.
    old = uuid.uuid5(uuid.NAMESPACE_OID, f"radiology-anonymize:{JOB}\x00{ORIGINAL_UID}")
    unkeyed = [
        f"2.25.{old.int}",
        f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, JOB + chr(0) + ORIGINAL_UID).int}",
        _spec_uid(b"", JOB, ORIGINAL_UID),
        _spec_uid(JOB.encode(), JOB, ORIGINAL_UID),
    ]
    assert new not in unkeyed
    # fields are length-prefixed: moving characters between job id and UID changes the result
    assert UidMap(ANONYMIZE_SECRET, JOB + "1")("2.3") != UidMap(ANONYMIZE_SECRET, JOB)("12.3")
    with pytest.raises(ValueError):
        UidMap("", JOB)


def test_new_uids_are_the_same_in_another_process() -> None:
    """Tasks of one job run on different processor replicas: a fresh interpreter with the same
    secret maps the same UID to the same new UID."""
    code = (
        "import sys; from services.processor.imaging.io_dicom_write import UidMap; "
        "print(UidMap(sys.argv[1], sys.argv[2])(sys.argv[3]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, ANONYMIZE_SECRET, JOB, ORIGINAL_UID],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert out.stdout.strip() == UidMap(ANONYMIZE_SECRET, JOB)(ORIGINAL_UID)


def test_new_uids_are_valid_uids() -> None:
    """PS3.5 9.1: digits and dots, at most 64 characters, no empty component and no component with
    a leading zero; 2.25 UIDs (B.2) are a UUID as one decimal integer."""
    rule = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
    rng = random.Random(7)
    uids = UidMap(ANONYMIZE_SECRET, JOB)
    originals = {ORIGINAL_UID, "1.2", "2.25." + "9" * 39, "1." + ".".join("9" * 3 for _ in range(15))}
    originals |= {".".join(str(rng.randrange(10**rng.randrange(1, 12))) for _ in range(rng.randrange(2, 12)))
                  for _ in range(3000)}
    seen = set()
    for original in originals:
        new = uids(original)
        assert rule.fullmatch(new) and len(new) <= 64, new
        assert pydicom.uid.UID(new).is_valid
        assert new.startswith("2.25.")
        as_uuid = uuid.UUID(int=int(new[5:]))
        assert as_uuid.version == 8 and as_uuid.variant == uuid.RFC_4122
        seen.add(new)
    assert len(seen) == len(originals)  # no two originals share a new UID


def test_anonymized_file_reads_back_with_unchanged_pixels(tmp_path: Path) -> None:
    source = dicom_file("CT_small.dcm")
    original = pydicom.dcmread(source)
    report = io_dicom_write.anonymize_file(source, tmp_path / "anon.dcm", UidMap(ANONYMIZE_SECRET, "job-9"))
    back = pydicom.dcmread(tmp_path / "anon.dcm")
    assert np.array_equal(back.pixel_array, original.pixel_array)
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID != original.SOPInstanceUID
    assert str(back.PatientName) == ""  # Z: empty
    assert back.PatientID == "ANONYMOUS" != original.PatientID  # Z/D: a dummy keeps Type 1 IODs valid
    assert back.SOPClassUID == original.SOPClassUID  # not an identifier: kept
    assert any("not stated" in w for w in report.warnings)  # CT_small has no Burned In Annotation


# -- a time series ---------------------------------------------------------------------------------


def test_cine_result_is_one_multi_frame_instance_in_time(tmp_path: Path) -> None:
    source_path = dicom_file("examples_ybr_color.dcm")
    source = pydicom.dcmread(source_path)
    image = imaging.load(source_path)

    def blur(frame: imaging.Image) -> imaging.Image:
        blurred = filters.gaussian_blur(frame.data, (2.0, 2.0, 0.0))
        return frame.with_data(filters.cast_like(blurred, np.uint8))

    result = per_frame(image, blur)
    ds = io_dicom_write.derived_frames(source, result, operation="blur", params={"sigma": 2})
    back = pydicom.dcmread(io_dicom_write.write_dataset(ds, tmp_path / "cine.dcm"))
    assert back.SOPClassUID == pydicom.uid.MultiFrameTrueColorSecondaryCaptureImageStorage
    assert int(back.NumberOfFrames) == 30 and float(back.FrameTime) == pytest.approx(float(source.FrameTime))
    assert back.FrameIncrementPointer == Tag("FrameTime")
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert np.array_equal(back.pixel_array, np.moveaxis(result.data, 2, 0))
    again = imaging.load(tmp_path / "cine.dcm")  # read back: still a time series, not a volume
    assert again.frames is not None and np.array_equal(again.data, result.data)


def test_grey_cine_keeps_real_units(tmp_path: Path) -> None:
    source = pydicom.dcmread(dicom_file("CT_small.dcm"))
    values = np.stack([np.full((6, 5), -1000 + 300 * t, np.int16) for t in range(4)], axis=2)
    image = imaging.Image(data=values, kind="2d", frames=imaging.Frames(interval_ms=50.0))
    ds = io_dicom_write.derived_frames(source, image, operation="normalize", params={})
    back = pydicom.dcmread(io_dicom_write.write_dataset(ds, tmp_path / "grey.dcm"))
    assert back.SOPClassUID == pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    assert back.PixelRepresentation == 0 and back.BitsAllocated == 16
    assert np.array_equal(apply_modality_lut(back.pixel_array, back), np.moveaxis(values, 2, 0))


def test_dcm2niix_reads_the_series_with_nibabels_geometry(tmp_path: Path) -> None:
    if shutil.which("dcm2niix") is None:
        if os.environ.get("RADIOLOGY_REQUIRE_DCM2NIIX"):
            pytest.fail("RADIOLOGY_REQUIRE_DCM2NIIX is set but dcm2niix is not installed")
        pytest.skip("needs dcm2niix (Debian package dcm2niix); CI installs it")
    source = nib.load(_oblique_float_nifti(tmp_path))
    image = imaging.load(tmp_path / "oblique.nii.gz")
    out = io_dicom_write.write_volume_series(image, tmp_path / "series.zip", operation="convert", params={})
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    with zipfile.ZipFile(out) as zf:
        zf.extractall(tmp_path / "in")
    subprocess.run(
        ["dcm2niix", "-o", str(tmp_path / "out"), "-f", "converted", str(tmp_path / "in")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    converted = nib.as_closest_canonical(nib.load(tmp_path / "out" / "converted.nii"))
    truth = nib.as_closest_canonical(source)
    np.testing.assert_allclose(converted.affine, truth.affine, atol=1e-3)
    with zipfile.ZipFile(out) as zf:
        step = float(pydicom.dcmread(zf.open(zf.namelist()[0])).RescaleSlope)
    assert np.abs(converted.get_fdata() - truth.get_fdata()).max() <= step / 2 + 1e-4
