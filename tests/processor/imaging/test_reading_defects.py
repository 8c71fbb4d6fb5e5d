"""The reading defects of the imaging audit, each checked against an independent reference
(pydicom's decoded arrays and its LUT functions, nibabel, scipy), never against our own output."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, SecondaryCaptureImageStorage, generate_uid
from scipy import ndimage

from services.processor import imaging
from services.processor.imaging import ImagingError, filters, geometry, io_nifti, io_series, outputs
from services.processor.imaging.frames import per_frame
from tests.processor.imaging.helpers import ct_slice, dicom_file

# -- D1: 32-bit RGB --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deep", "eight_bit"),
    [("SC_rgb_rle_32bit.dcm", "SC_rgb_rle.dcm"), ("SC_rgb_rle_32bit_2frame.dcm", "SC_rgb_rle_2frame.dcm")],
)
def test_32_bit_rgb_keeps_its_colours(deep: str, eight_bit: str) -> None:
    """pydicom's 8-bit copy of the same picture is the reference: its top byte."""
    image = imaging.load(dicom_file(deep))
    reference = pydicom.dcmread(dicom_file(eight_bit)).pixel_array
    stored = pydicom.dcmread(dicom_file(deep)).pixel_array
    assert stored.dtype == np.uint32
    assert np.array_equal(reference, stored >> 24)  # the two files are the same picture
    data = image.data
    if image.frames is not None:
        data = np.moveaxis(data, 2, 0)  # (row, column, frame, sample) -> pydicom's frame-first order
    assert image.samples == "RGB" and data.dtype == np.uint8
    assert np.array_equal(data, reference)
    assert len(np.unique(data)) > 2  # not collapsed to 0/255


# -- m2: 16-bit palettes by their high byte --------------------------------------------------------


@pytest.mark.parametrize("name", ["examples_palette.dcm", "OBXXXX1A.dcm"])
def test_16_bit_palette_is_shown_by_its_high_byte(name: str) -> None:
    ds = pydicom.dcmread(dicom_file(name))
    assert int(ds.RedPaletteColorLookupTableDescriptor[2]) == 16
    rgb16 = apply_color_lut(ds.pixel_array, ds)
    image = imaging.load(dicom_file(name))
    assert image.samples == "RGB" and image.data.dtype == np.uint8
    assert np.array_equal(image.data, (rgb16 >> 8).astype(np.uint8))
    assert image.data.max() == rgb16.max() >> 8  # 65535 is 255, not 254


# -- m1: non-integer rescale slope in float64 ------------------------------------------------------


@pytest.mark.parametrize("name", ["MR2_UNCI.dcm", "MR2_J2KR.dcm"])
def test_non_integer_slope_matches_pydicom_exactly(name: str) -> None:
    ds = pydicom.dcmread(dicom_file(name))
    assert not float(ds.RescaleSlope).is_integer()
    reference = apply_modality_lut(ds.pixel_array, ds)
    image = imaging.load(dicom_file(name))
    assert image.data.dtype == np.float64
    assert np.array_equal(image.data, reference)


def test_rt_dose_grid_scaling_is_exact() -> None:
    ds = pydicom.dcmread(dicom_file("rtdose.dcm"))
    image = imaging.load(dicom_file("rtdose.dcm"))
    reference = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.array_equal(np.moveaxis(image.data, 2, 0).swapaxes(1, 2), reference)


# -- D2: VOI LUT data (OW) in Explicit VR Big Endian -----------------------------------------------


def _big_endian_with_voi_lut(tmp_path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = 16, 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = (np.arange(16 * 64, dtype=np.uint16).reshape(16, 64) * 4) % 4096
    ds.PixelData = pixels.astype(">u2").tobytes()
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    table = (np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.uint16)  # a gamma curve
    item.add_new(0x00283006, "OW", table.astype(">u2").tobytes())  # LUT Data, as OW
    ds.VOILUTSequence = [item]
    path = tmp_path / "voi_be.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_voi_lut_ow_in_big_endian_file(tmp_path: Path) -> None:
    path = _big_endian_with_voi_lut(tmp_path)
    ds = pydicom.dcmread(path)
    assert ds["VOILUTSequence"][0]["LUTData"].VR == "OW" and not ds.original_encoding[1]
    reference = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)  # 16-bit LUT output
    expected = np.rint(reference * 255.0 / 65535.0).astype(np.uint8)
    image = imaging.load(path)
    grey, samples = outputs.display_array(image)
    assert samples == "L"
    assert np.array_equal(grey, expected)


# -- D6: frames in time ----------------------------------------------------------------------------


def test_ultrasound_cine_is_a_time_series_not_a_volume() -> None:
    path = dicom_file("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    reference = ds.pixel_array  # (frame, row, column, sample), YBR converted to RGB by pydicom
    image = imaging.load(path)
    assert image.kind == "2d" and image.frames is not None and image.affine is None
    assert image.frames.interval_ms == pytest.approx(float(ds.FrameTime))
    assert image.data.shape == (240, 320, 30, 3) and image.frame_count == 30
    for t in (0, 17, 29):
        assert np.array_equal(image.frame(t).data, reference[t])
    fmt, meta = imaging.inspect(path)
    assert meta["kind"] == "2d" and meta["shape"] == [240, 320, 30] and "frame_axis" in meta


def test_cine_is_processed_one_frame_at_a_time() -> None:
    image = imaging.load(dicom_file("examples_ybr_color.dcm"))

    def blur(frame: imaging.Image) -> imaging.Image:
        return frame.with_data(filters.gaussian_blur(frame.data, (3.0, 3.0, 0.0)))

    result = per_frame(image, blur)
    assert result.frames == image.frames and result.data.shape == image.data.shape
    reference = np.asarray(image.data, np.float32)
    for t in (0, 15, 29):  # each frame alone, as scipy blurs it: nothing comes from other frames
        alone = ndimage.gaussian_filter(reference[:, :, t], sigma=(3.0, 3.0, 0.0), truncate=4.0)
        np.testing.assert_allclose(result.data[:, :, t], alone, rtol=1e-5, atol=1e-3)


def test_cine_is_written_as_x_y_1_t(tmp_path: Path) -> None:
    image = imaging.load(dicom_file("examples_ybr_color.dcm"))
    written = outputs.write_outputs(image, tmp_path, "cine", source=image)
    assert [o["role"] for o in written] == ["primary", "preview", "input"]
    nii = nib.load(written[0]["path"])
    assert nii.shape == (320, 240, 1, 30)
    assert nii.header.get_xyzt_units() == ("mm", "msec")
    assert nii.header.get_zooms()[3] == pytest.approx(33.333, abs=1e-3)
    rgb = np.asanyarray(nii.dataobj)
    frame = np.stack([rgb[c] for c in "RGB"], axis=-1)[:, :, 0, 7]
    assert np.array_equal(frame.swapaxes(0, 1), image.frame(7).data)


def _enhanced(positions: list[tuple[float, float, float]]) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 5, len(positions)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(len(positions) * 20, dtype="<u2").tobytes()
    shared = Dataset()
    plane = Dataset()
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [1.0, 1.0]
    measures.SliceThickness = 2.0
    shared.PlaneOrientationSequence = [plane]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame_items = []
    for position in positions:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = list(position)
        item.PlanePositionSequence = [pos]
        per_frame_items.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame_items
    return ds


def test_frames_at_one_position_are_time_and_frames_at_many_are_space(tmp_path: Path) -> None:
    same = tmp_path / "same.dcm"
    _enhanced([(0.0, 0.0, 5.0)] * 3).save_as(same, enforce_file_format=True)
    image = imaging.load(same)
    assert image.frames is not None and image.data.shape == (4, 5, 3)
    stacked = tmp_path / "stacked.dcm"
    _enhanced([(0.0, 0.0, 2.0 * k) for k in range(3)]).save_as(stacked, enforce_file_format=True)
    volume = imaging.load(stacked)
    assert volume.kind == "volume" and volume.frames is None and volume.data.shape == (5, 4, 3)
    assert geometry.voxel_sizes(volume.affine) == pytest.approx((1.0, 1.0, 2.0))


# -- D3 / D4: series geometry ----------------------------------------------------------------------


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _axial_series(
    zs: list[float], orientations: list[tuple[float, ...]] | None = None, uid: str = "1.2.3.9"
) -> list[tuple[str, bytes]]:
    members = []
    for k, z in enumerate(zs):
        orientation = orientations[k] if orientations else (1, 0, 0, 0, 1, 0)
        pixels = np.full((4, 3), 1000 + k, np.uint16)
        members.append(
            (
                f"s/IM{k}.dcm",
                ct_slice(pixels, series_uid=uid, position=(0.0, 0.0, z), orientation=orientation, instance=k),
            )
        )
    return members


def test_orientations_equal_up_to_rounding_are_one_orientation(tmp_path: Path) -> None:
    jitter = [(1, 1e-6 * (k % 2), 0, 0, 1, -1e-6 * (k % 3)) for k in range(5)]
    image = imaging.load(_zip(tmp_path / "s.zip", _axial_series([0, 2, 4, 6, 8], jitter)))
    assert image.kind == "volume" and image.data.shape == (3, 4, 5)
    expected = geometry.dicom_affine((1, 0, 0, 0, 1, 0), (0, 0, 0), (0.8, 0.6), 2.0)
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)


def test_really_different_orientations_are_refused(tmp_path: Path) -> None:
    tilt = [(1, 0, 0, 0, 1, 0)] * 2 + [(1, 0, 0, 0, 0.9950, -0.0998)]
    with pytest.raises(ImagingError, match="mixes slice orientations"):
        imaging.load(_zip(tmp_path / "s.zip", _axial_series([0, 2, 4], tilt)))


def test_a_missing_slice_is_refused_naming_the_gap(tmp_path: Path) -> None:
    zs = [0.0, 2.5, 5.0, 10.0, 12.5, 15.0]  # 7.5 is missing
    with pytest.raises(ImagingError) as caught:
        imaging.load(_zip(tmp_path / "gap.zip", _axial_series(zs)))
    message = str(caught.value)
    assert "'IM2.dcm' and 'IM3.dcm'" in message and "5.000 mm" in message and "2.500 mm" in message
    assert "1 slice(s) missing" in message


def test_positions_rounded_in_the_file_are_still_regular(tmp_path: Path) -> None:
    zs = [round(k * 0.625, 2) for k in range(8)]  # 0.63, 1.25, 1.88, ... as scanners round them
    image = imaging.load(_zip(tmp_path / "thin.zip", _axial_series(zs)))
    assert image.data.shape == (3, 4, 8)
    assert geometry.voxel_sizes(image.affine)[2] == pytest.approx(0.625, abs=1e-3)


# -- ZIP with several series -----------------------------------------------------------------------


def test_every_series_of_a_zip_is_listed_and_read(tmp_path: Path) -> None:
    first = _axial_series([0, 3, 6], uid="1.2.3.1")
    later = _axial_series([10, 12, 14, 16], uid="1.2.3.2")
    second = [(name.replace("s/", "t/"), data) for name, data in later]
    path = _zip(tmp_path / "two.zip", first + second)
    listed = io_series.list_series(path)
    assert [(s.series_instance_uid, s.slices) for s in listed] == [("1.2.3.1", 3), ("1.2.3.2", 4)]
    for info, (name, members) in zip(listed, [("a", first), ("b", second)], strict=True):
        alone = imaging.load(_zip(tmp_path / f"{name}.zip", members))  # that series on its own
        chosen = io_series.read_series(path, info.series_instance_uid)
        assert np.array_equal(chosen.data, alone.data) and np.array_equal(chosen.affine, alone.affine)
    fmt, meta = imaging.inspect(path)
    assert [s["series_instance_uid"] for s in meta["series"]] == ["1.2.3.1", "1.2.3.2"]
    every = list(io_series.read_every_series(path))
    assert [info.slices for info, _ in every] == [3, 4]
    assert [image.data.shape[2] for _, image in every] == [3, 4]
    with pytest.raises(ImagingError, match="no series with Series Instance UID"):
        io_series.read_series(path, "9.9.9")


def test_one_series_zip_still_reads_through_load(tmp_path: Path) -> None:
    path = _zip(tmp_path / "one.zip", _axial_series([0, 3, 6]))
    image = imaging.load(path)
    assert image.data.shape == (3, 4, 3) and image.metadata["series_count"] == 1
    assert [s.as_dict()["slices"] for s in io_series.list_series(path)] == [3]


# -- GDCM as the last resort -----------------------------------------------------------------------


def test_12_bit_jpeg_extended_decodes_through_gdcm() -> None:
    image = imaging.load(dicom_file("JPEG-lossy.dcm"))
    fixed = pydicom.dcmread(dicom_file("JPGExtended.dcm"))  # pydicom's repaired copy of the file
    reference = apply_modality_lut(fixed.pixel_array, fixed)
    assert image.metadata["decoder"] == "gdcm"
    assert image.data.shape == reference.shape
    assert np.abs(image.data.astype(np.float64) - reference).max() <= 1  # lossy: within one level


# -- D5: NIfTI qform and sform ---------------------------------------------------------------------


def _two_forms(tmp_path: Path) -> Path:
    qform = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    angle = np.deg2rad(10)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    sform = rotation @ qform
    sform[:3, 3] += [3.0, -4.0, 5.0]
    img = nib.Nifti1Image(np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5), None)
    img.set_qform(qform, code=1)  # scanner
    img.set_sform(sform, code=4)  # MNI
    path = tmp_path / "two_forms.nii.gz"
    nib.save(img, path)
    return path


def test_nifti_output_keeps_qform_and_sform_with_their_codes(tmp_path: Path) -> None:
    path = _two_forms(tmp_path)
    source = nib.load(path)
    image = imaging.load(path)
    out = tmp_path / "out.nii.gz"
    io_nifti.write_nifti(image, out)
    written = nib.load(out)
    for form in ("qform", "sform"):
        expected, expected_code = getattr(source.header, f"get_{form}")(coded=True)
        got, code = getattr(written.header, f"get_{form}")(coded=True)
        assert int(code) == int(expected_code)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_resampled_nifti_moves_both_forms_with_the_grid(tmp_path: Path) -> None:
    path = _two_forms(tmp_path)
    source = nib.load(path)
    image = imaging.load(path)
    new_shape = (3, 14, 5)
    affine = geometry.resampled_affine(image.affine, image.data.shape, new_shape)
    result = image.with_data(filters.resample_linear(image.data, new_shape), affine=affine)
    out = tmp_path / "resampled.nii.gz"
    io_nifti.write_nifti(result, out)
    written = nib.load(out)
    # the first voxel's outer corner stays where it was in both spaces
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    for form in ("qform", "sform"):
        before = getattr(source.header, f"get_{form}")() @ corner
        after = getattr(written.header, f"get_{form}")() @ corner
        np.testing.assert_allclose(after, before, atol=1e-3)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 4

