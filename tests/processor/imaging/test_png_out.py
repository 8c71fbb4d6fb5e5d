"""PNG outputs are lossless: what Pillow (an independent decoder) reads back is what was written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from services.processor.imaging import io_raster

RNG = np.random.default_rng(7)


@pytest.mark.parametrize(
    ("shape", "dtype", "samples", "mode"),
    [
        ((512, 512), np.uint8, "L", "L"),
        ((37, 91), np.uint16, "L", "I;16"),
        ((40, 30, 2), np.uint8, "LA", "LA"),
        ((40, 30, 3), np.uint8, "RGB", "RGB"),
        ((1, 1, 4), np.uint8, "RGBA", "RGBA"),
    ],
)
def test_png_round_trip_is_exact(tmp_path: Path, shape: tuple[int, ...], dtype: type, samples: str,
                                 mode: str) -> None:
    data = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    path = tmp_path / "out.png"
    io_raster.write_png(data, samples, path)
    with PILImage.open(path) as im:
        assert im.format == "PNG" and im.mode == mode
        assert np.array_equal(np.asarray(im), data)


def test_16_bit_colour_and_floats_are_stored_as_8_bit(tmp_path: Path) -> None:
    rgb16 = np.array([[[0, 65535, 32896]]], np.uint16)
    io_raster.write_png(rgb16, "RGB", tmp_path / "a.png")
    with PILImage.open(tmp_path / "a.png") as im:
        assert np.asarray(im).tolist() == [[[0, 255, 128]]]
    io_raster.write_png(np.array([[-3.0, 12.4, 300.0]]), "L", tmp_path / "b.png")
    with PILImage.open(tmp_path / "b.png") as im:
        assert np.asarray(im).tolist() == [[0, 12, 255]]
