"""Decode any image a user or a dataset hands us, and turn it into model input.

Everything that reads pixels goes through two functions:

- :func:`load_image` decodes by *content* (never by extension): PNG/JPEG/BMP/TIFF/GIF
  through Pillow, DICOM through pydicom. It returns a :class:`DecodedImage`
  holding an 8-bit array (H, W) or (H, W, 3) ready for display, and notes such as
  "multi-frame TIFF: first frame used".
- :func:`to_model_input` resizes and converts channels for a model. Training,
  prediction and Grad-CAM all call it, so they all see the same pixels.

Example::

    >>> img = load_image("scan.dcm")          # doctest: +SKIP
    >>> x = to_model_input(img.pixels, image_size=224, channels=1)
    >>> x.shape, x.dtype
    ((224, 224, 1), dtype('uint8'))

Bad input raises :class:`ImageError` with a sentence a clinician can read.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from medclf_core.errors import ImageError

# Images larger than this many pixels are refused as likely decompression bombs
# (a 16k x 16k scan is still accepted).
MAX_PIXELS = 16384 * 16384
# Decoded images whose longer side exceeds this are downscaled on load; no model
# here needs more and it bounds memory per upload.
MAX_SIDE = 4096
# Uploads bigger than this are refused before decoding.
MAX_FILE_BYTES = 512 * 1024 * 1024

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom", ".webp"}


@dataclass
class DecodedImage:
    """An image ready for display and for :func:`to_model_input`.

    ``pixels`` is uint8, (H, W) for grayscale or (H, W, 3) for colour.
    ``notes`` are plain-language remarks on how it was decoded.
    """

    pixels: np.ndarray
    source_format: str
    notes: list[str] = field(default_factory=list)

    @property
    def is_grayscale(self) -> bool:
        return self.pixels.ndim == 2


def _read_bytes(source: str | os.PathLike | bytes | io.IOBase) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, io.IOBase) or hasattr(source, "read"):
        data = source.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"File not found: {path.name}")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"File is too large ({size / 2**20:.0f} MB); the limit is {MAX_FILE_BYTES // 2**20} MB.")
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"File is too large; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    return data


def looks_like_dicom(data: bytes) -> bool:
    """True for DICOM Part 10 files (``DICM`` at byte 128) and for preamble-less
    data sets that start with a group-0x0008 or 0x0002 tag."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return len(data) >= 8 and data[:2] in (b"\x08\x00", b"\x02\x00") and data[2:4] in (
        b"\x00\x00", b"\x05\x00", b"\x08\x00", b"\x16\x00", b"\x01\x00", b"\x02\x00", b"\x10\x00", b"\x12\x00",
    )


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8 by its own range (min -> 0, max -> 255).

    A constant image maps to zeros rather than dividing by zero.
    """
    if array.dtype == np.uint8:
        return array
    a = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, np.nan)
    lo, hi = np.nanmin(a), np.nanmax(a)
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _limit_size(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    h, w = pixels.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return pixels
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    notes.append(f"large image ({w}x{h}) downscaled to {size[0]}x{size[1]} on load")
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _pil_to_array(img: Image.Image, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        notes.append(f"{'16-bit' if mode.startswith('I;16') else mode + '-mode'} image scaled to 8 bits by its own range")
        return to_uint8(arr)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("L", "LA"):
        return np.asarray(img.convert("L"))
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "PA", "LA", "La", "RGBa"):
        # Composite on black: medical images are shown on black and transparent
        # padding should not look like bright tissue.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    arr = np.asarray(img)
    if arr.ndim == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
        return np.ascontiguousarray(arr[..., 0])  # colour container, grayscale content
    return arr


def _decode_pillow(data: bytes) -> DecodedImage:
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "image"
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                notes.append(f"multi-frame {fmt} ({frames} frames): first frame used")
                img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"The image is too large to open safely (over {MAX_PIXELS / 1e6:.0f} megapixels)."
        ) from None
    except UnidentifiedImageError:
        head = data[:5]
        kind = "a PDF document" if head.startswith(b"%PDF") else "not an image Pillow or pydicom can read"
        raise ImageError(f"This file is {kind}. Supported: PNG, JPEG, BMP, TIFF, GIF, WebP and DICOM.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"The image file is damaged or truncated and cannot be decoded ({exc}).") from None
    if img.width == 0 or img.height == 0:
        raise ImageError("The image has no pixels (zero width or height).")
    pixels = _pil_to_array(img, notes)
    return DecodedImage(_limit_size(pixels, notes), fmt, notes)


def load_image(source: str | os.PathLike | bytes | io.IOBase, *, frame: int | None = None) -> DecodedImage:
    """Decode a file path, bytes, or file-like object into a :class:`DecodedImage`.

    The format is sniffed from the bytes. DICOM goes through :mod:`medclf_core.dicom`
    (``frame`` picks one frame of a multi-frame series; default the middle one).
    Raises :class:`ImageError` with a readable message for anything that is not a
    decodable image.
    """
    data = _read_bytes(source)
    if looks_like_dicom(data):
        from medclf_core.dicom import decode_dicom

        return decode_dicom(data, frame=frame)
    return _decode_pillow(data)


def to_model_input(pixels: np.ndarray, image_size: int | tuple[int, int], channels: int) -> np.ndarray:
    """Resize and convert ``pixels`` (uint8, (H, W) or (H, W, C)) to the model's input.

    Returns uint8 (size, size, channels). The aspect ratio is not kept (the images
    are squashed to a square), matching how the training data was prepared.
    This one function is used by training, prediction and Grad-CAM.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    h_out, w_out = (image_size, image_size) if isinstance(image_size, int) else image_size
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        arr = to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageError(f"Unsupported pixel array shape {arr.shape}.")
    if channels == 1 and arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
    h, w = arr.shape[:2]
    interp = cv2.INTER_AREA if h * w > h_out * w_out else cv2.INTER_LINEAR
    if (h, w) != (h_out, w_out):
        arr = cv2.resize(np.ascontiguousarray(arr), (w_out, h_out), interpolation=interp)
    if channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if channels == 1:
        arr = arr[..., None]
    return np.ascontiguousarray(arr, dtype=np.uint8)


def load_for_model(source, image_size: int, channels: int) -> np.ndarray:
    """:func:`load_image` then :func:`to_model_input`; the training pipeline's decoder."""
    return to_model_input(load_image(source).pixels, image_size, channels)


def is_image_candidate(path: Path) -> bool:
    """Files a dataset scan should try to decode: known suffixes, or none at all
    (DICOM exports are often extension-less). Hidden files are ignored."""
    if path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == ""
