"""PNG and JPEG: read through Pillow; PNG written by imagecodecs (libpng + zlib-ng), JPEG by Pillow."""

from __future__ import annotations

import warnings
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from . import limits
from .errors import ImagingError
from .image import Display, Image

# PNG outputs: imagecodecs' encoder (libpng) at deflate level 1, every row Paeth-filtered (libpng's
# adaptive choice tries all five filters per row: about twice the time for the same size), and for
# grey images deflate's run-length strategy on top: 2-4x faster than libpng's defaults and smaller
# on grey medical images; not for colour, where it costs up to half again in size on ultrasound
# frames. bench/png_encode.py measures the choices side by side.
PNG_COMPRESS_LEVEL = 1
PNG_FILTER_PAETH = 128
PNG_STRATEGY_RLE = 3
JPEG_QUALITY = 90

_NAMES = {"png": "PNG", "jpeg": "JPEG"}


def read_raster(path: Path, fmt: str) -> Image:
    """A PNG or JPEG as display values: L, LA, RGB, RGBA (uint8) or 16-bit grey (uint16)."""
    name = _NAMES[fmt]
    try:
        with warnings.catch_warnings():
            # A decompression bomb above MAX_IMAGE_PIXELS is refused, not just warned about.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as pil:
                _check_before_decoding(path, pil, fmt)
                pil.load()  # decode everything now so that truncation is detected here
                info = {"mode": pil.mode, "width": pil.width, "height": pil.height}
                if fmt == "jpeg":
                    pil = ImageOps.exif_transpose(pil)
                data, samples = _to_array(pil)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImagingError(f"{name} image is too large to process: {exc}") from None
    except UnidentifiedImageError:
        raise ImagingError(f"{name} file could not be decoded: it is not a valid {name} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImagingError(f"{name} file is truncated or corrupt: {exc}") from None
    metadata = {"format": fmt, "source_mode": info["mode"]}
    return Image(data=data, kind="2d", samples=samples, display=Display(native=True), metadata=metadata)


def _png_layout(path: Path) -> tuple[int, int]:
    """(samples per pixel, bits per sample) from a PNG's IHDR chunk; palette images count as the
    RGBA they are expanded to."""
    with open(path, "rb") as f:
        head = f.read(29)
    bits, colour = head[24], head[25]
    samples = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}.get(colour, 4)
    return samples, (8 if colour == 3 else bits)


def _check_before_decoding(path: Path, pil: PILImage.Image, fmt: str) -> None:
    """Size, inflation ratio and memory budget, from the header alone."""
    name = _NAMES[fmt]
    width, height = pil.width, pil.height
    limits.check_image_size(f"{name} image", height, width)
    if fmt == "png":
        samples, bits = _png_layout(path)
    else:
        samples, bits = len(pil.getbands()), 8
    decoded = height * -(-width * samples * bits // 8)
    size = path.stat().st_size
    limits.check_inflated_size(f"{name} image", decoded, size, limits.IMAGE_INFLATE_RATIO_FLOOR)
    limits.check_memory(f"{name} image", width * height * samples, bits / 8, "2d")


def _to_array(pil: PILImage.Image) -> tuple[np.ndarray, str]:
    mode = pil.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(pil), mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(pil).astype(np.uint16, copy=False), "L"
    if mode in ("I", "F"):
        values = np.asarray(pil)
        if values.min() >= 0 and values.max() <= 65535 and np.array_equal(values, np.rint(values)):
            return values.astype(np.uint16), "L"
        lo, hi = float(values.min()), float(values.max())  # out-of-range: stretch to 16 bits
        scaled = (values.astype(np.float64) - lo) * (65535.0 / max(hi - lo, 1e-12))
        return np.rint(scaled).astype(np.uint16), "L"
    if mode == "1":
        return np.asarray(pil.convert("L")), "L"
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in pil.info or mode == "PA"
        target = "RGBA" if has_alpha else "RGB"
        return np.asarray(pil.convert(target)), target
    # CMYK, YCbCr, LAB, ... : show as RGB
    return np.asarray(pil.convert("RGB")), "RGB"


def _stored(data: np.ndarray, samples: str) -> np.ndarray:
    """What an image file stores: 16-bit grey stays 16-bit; other 16-bit samples become 8-bit by
    their high byte's scale, anything else is clipped and rounded to 8 bits."""
    if data.dtype == np.uint16:
        if samples == "L":
            return np.ascontiguousarray(data, "<u2")
        data = (data.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if data.dtype != np.uint8:
        data = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(data)


def to_pillow(data: np.ndarray, samples: str) -> PILImage.Image:
    """An 8-bit L/LA/RGB/RGBA or 16-bit grey array as a Pillow image (mode from the shape)."""
    return PILImage.fromarray(_stored(data, samples))


def write_png(data: np.ndarray, samples: str, path: Path) -> None:
    """A lossless PNG of the array: L, LA, RGB, RGBA (8-bit) or 16-bit grey."""
    Path(path).write_bytes(encode_png(data, samples))


def encode_png(data: np.ndarray, samples: str) -> bytes:
    """The PNG bytes of write_png."""
    strategy = PNG_STRATEGY_RLE if samples in ("L", "LA") else None
    return imagecodecs.png_encode(_stored(data, samples), level=PNG_COMPRESS_LEVEL,
                                  filter=PNG_FILTER_PAETH, strategy=strategy)


def write_jpeg(data: np.ndarray, samples: str, path: Path) -> None:
    """JPEG is 8-bit L or RGB: 16-bit grey is scaled, alpha dropped."""
    if data.dtype == np.uint16:
        data = (data.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if samples == "LA":
        data, samples = data[..., 0], "L"
    elif samples == "RGBA":
        data, samples = data[..., :3], "RGB"
    to_pillow(data, samples).save(path, format="JPEG", quality=JPEG_QUALITY)
