"""Decode any image a user or a dataset hands us, and turn it into model input.

Everything that reads pixels goes through two functions:

- :func:`load_image` decodes by *content* (never by extension): PNG/JPEG/BMP/TIFF/GIF
  through Pillow, DICOM through pydicom (:mod:`medclf_core.io.dicom`). It returns a
  :class:`~medclf_core.io.pixels.DecodedImage` holding an 8-bit array (H, W) or (H, W, 3)
  ready for display, notes such as "multi-frame TIFF: first frame used", and for a
  DICOM its header facts (``dicom``: display fields and identifiers, from the same parse).
- :func:`to_model_input` resizes and converts channels for a model. Training,
  prediction and Grad-CAM all call it, so they all see the same pixels.

Example::

    >>> import io
    >>> from PIL import Image
    >>> png = io.BytesIO()
    >>> Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64).astype(np.uint8)).save(png, "PNG")
    >>> img = load_image(png.getvalue())
    >>> img.source_format, img.pixels.shape, img.dicom is None
    ('PNG', (48, 64), True)
    >>> x = to_model_input(img.pixels, image_size=224, channels=1)
    >>> x.shape, x.dtype
    ((224, 224, 1), dtype('uint8'))

Bad input raises :class:`ImageError` with a sentence a clinician can read.

The decoded-image type, the size limits and the byte reading live in :mod:`medclf_core.io.pixels`;
this module imports :mod:`medclf_core.io.dicom`, never the other way round.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from medclf_core.errors import ImageError, SHOWN_TO_USER, log
from medclf_core.io import pixels as _pixels  # limits read at call time, so tests can lower them
from medclf_core.io.dicom import decode_dicom, looks_like_dicom
from medclf_core.io.pixels import DecodedImage, limit_size, read_bytes, to_uint8

# Deflate cannot compress better than about 1032:1, so a PNG whose header claims far
# more pixel bytes than that is lying (a crafted header or a truncated file).
PNG_MAX_INFLATE_RATIO = 1100
# A Huffman-coded JPEG needs at least about two bits per 8x8 block of its full-size component;
# a header claiming more pixels than width*height/JPEG_MIN_BYTES_DIVISOR bytes can hold is lying.
JPEG_MIN_BYTES_DIVISOR = 1024
# Images whose shorter side is below this, once decoded, are refused: nothing to classify.
MIN_SIDE = 8

Image.MAX_IMAGE_PIXELS = _pixels.MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom", ".webp"}


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _decoded_bytes(img: Image.Image) -> int:
    """Memory Pillow will allocate to decode ``img`` (one frame, after any draft).

    Pillow keeps 8-bit single-band modes in one byte per pixel, 16-bit modes in two,
    and everything else (RGB included) in four.
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        per_pixel = 2
    elif img.mode in ("1", "L", "P"):
        per_pixel = 1
    else:
        per_pixel = 4
    return img.width * img.height * per_pixel


def _refuse_implausible_size(img: Image.Image, data: bytes) -> None:
    """Refuse, before any pixel memory is allocated, images too big to hold or whose
    header claims more pixels than the file could possibly contain."""
    needed = _decoded_bytes(img)
    if needed > _pixels.MAX_DECODED_BYTES:
        raise ImageError(
            f"The image is too large to open safely ({img.width}x{img.height} pixels, "
            f"{needed / 2**20:.0f} MB decoded; the limit is {_pixels.MAX_DECODED_BYTES // 2**20} MB)."
        )
    if img.format == "PNG" and _png_raw_bytes(data) > PNG_MAX_INFLATE_RATIO * len(data) + 2**20:
        raise ImageError("The PNG file is damaged or truncated: its header claims far more pixels than the file holds.")


_ARITHMETIC_SOF = tuple(bytes([0xFF, m]) for m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _refuse_lying_jpeg(img: Image.Image, data: bytes) -> None:
    """Refuse a JPEG whose header claims far more pixels than its data can hold (a 64-pixel
    file claiming 16000x16000 would otherwise decode as a grey picture and be classified)."""
    if img.format != "JPEG" or img.width * img.height < 4 * 2**20:
        return
    if any(marker in data for marker in _ARITHMETIC_SOF):
        return  # arithmetic coding can code a flat picture in almost nothing
    if len(data) * JPEG_MIN_BYTES_DIVISOR < img.width * img.height:
        raise ImageError(f"The JPEG file is damaged or truncated: its header claims {img.width}x{img.height} "
                         "pixels, far more than the file holds.")


_JPEG_DAMAGED = ("the JPEG data is damaged: the decoder ran out of image data before the last blocks and "
                 "filled them in, so parts of the picture may be grey or garbled")
# Appended in place of the end-of-image marker: enough bits for the decoder's look-ahead, too few
# to finish a scan that ran out of data. A sound JPEG then decodes; a damaged one asks for more.
_JPEG_PROBE_PAD = b"\xff\x00" * 32


def _jpeg_runs_out(data: bytes) -> bool:
    """True when the JPEG's entropy-coded data ends before its last block: libjpeg's "Corrupt JPEG
    data: premature end of data segment", which Pillow silences (it fills the rest with grey).

    Decoded again without the end-of-image marker (at 1/8 scale: the same entropy decoding, less
    work): libjpeg then cannot fill in the missing blocks and Pillow reports the file as truncated.
    Not for progressive JPEGs: their decoder needs the end marker to finish at all.
    """
    end = data.rfind(b"\xff\xd9")
    if end < 0:
        return False
    try:
        with Image.open(io.BytesIO(data[:end] + _JPEG_PROBE_PAD)) as probe:
            probe.draft(probe.mode, (max(1, probe.width // 8), max(1, probe.height // 8)))
            probe.load()
    except (OSError, SyntaxError, ValueError, EOFError):
        return True
    except Exception:  # noqa: BLE001 - the probe must never refuse an image the real decode accepted
        return False
    return False


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


def _png_raw_bytes(data: bytes) -> int:
    """Size of the filtered scanlines a PNG header promises (what its zlib stream inflates to)."""
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    row_bits = width * _PNG_CHANNELS.get(colour_type, 4) * bit_depth
    return height * (1 + (row_bits + 7) // 8)


def _draft_large_jpeg(img: Image.Image, notes: list[str]) -> None:
    """Let libjpeg decode a huge JPEG at 1/2, 1/4 or 1/8 scale: far less memory."""
    if img.format != "JPEG" or max(img.size) <= _pixels.MAX_SIDE:
        return
    scale = _pixels.MAX_SIDE / max(img.size)
    before = img.size
    img.draft(img.mode, (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
    if img.size != before:
        notes.append(f"large JPEG ({before[0]}x{before[1]}) decoded at reduced scale {img.size[0]}x{img.size[1]}")


def _shrink_early(img: Image.Image, notes: list[str]) -> Image.Image:
    """Box-reduce a huge image by an integer factor in Pillow, before mode conversions
    multiply its memory. :func:`~medclf_core.io.pixels.limit_size` then fits it exactly."""
    longest = max(img.size)
    factor = math.ceil(longest / _pixels.MAX_SIDE)
    if factor < 2 or img.mode in _SIXTEEN_BIT_MODES:
        return img  # 16-bit is shrunk as an array, keeping its full range
    notes.append(f"large image ({img.width}x{img.height}) reduced {factor}x on load")
    if img.mode == "1":
        img = img.convert("L")  # same memory (Pillow keeps "1" at a byte per pixel)
    if img.mode == "P":
        # Palette indices cannot be averaged: pick pixels, then convert the small image.
        size = (max(1, img.width // factor), max(1, img.height // factor))
        return img.resize(size, Image.Resampling.NEAREST)
    return img.reduce(factor)


def _rgb_or_first_band(img: Image.Image, notes: list[str]) -> Image.Image:
    """``img`` as RGB; a colour space Pillow cannot convert keeps its first band (lightness)."""
    try:
        return img.convert("RGB")
    except ValueError:
        notes.append(f"{img.mode} colour space cannot be converted; its first band is shown as grayscale")
        return img.getchannel(0)


def _pil_to_array(img: Image.Image, notes: list[str]) -> np.ndarray:
    """uint8 pixels (H, W) or (H, W, 3) of a decoded Pillow image of any mode."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        arr = limit_size(np.asarray(img), notes)
        if arr.dtype.kind == "f" and not np.isfinite(arr).any():
            raise ImageError("The image holds no valid pixel values (every pixel is NaN or infinite).")
        kind = "16-bit" if mode.startswith("I;16") else f"{mode}-mode"
        notes.append(f"{kind} image scaled to 8 bits by its own range")
        return to_uint8(arr)
    if mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"))
    if mode == "La":
        return np.asarray(img.getchannel(0))
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "PA", "RGBa"):
        # Composite on black: medical images are shown on black and transparent
        # padding should not look like bright tissue.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        img = _rgb_or_first_band(img, notes)  # CMYK, YCbCr, LAB, HSV, RGBX
    arr = np.asarray(img)
    if arr.ndim == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
        return np.ascontiguousarray(arr[..., 0])  # colour container, grayscale content
    return arr


def _exif_upright(img: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation of a photo; a damaged EXIF block is ignored, not fatal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data"
            return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed EXIF
        notes.append("EXIF orientation could not be read; the image is shown as stored")
        return img


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"II*\x00": "TIFF",
               b"MM\x00*": "TIFF"}


def _unidentified_message(data: bytes) -> str:
    """Say what a non-image upload looks like, without echoing its content."""
    for signature, name in _SIGNATURES.items():
        if data.startswith(signature):
            return f"The file looks like a {name} image but its header is damaged; it cannot be decoded."
    head = data[:8].lstrip()
    if head.startswith(b"%PDF"):
        kind = "a PDF document"
    elif head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        kind = "a zip archive (upload a dataset zip on the dataset page)"
    elif head[:1] in (b"<", b"{", b"[") or _mostly_text(data[:512]):
        kind = "a text file, not an image"
    else:
        kind = "not an image Pillow or pydicom can read"
    return f"This file is {kind}. Supported: PNG, JPEG, BMP, TIFF, GIF, WebP and DICOM."


def damaged_message(exc: BaseException, data: bytes) -> str:
    """The plain sentence for a file Pillow recognised but could not decode: a file that ends too soon (Pillow's
    "image file is truncated", an ``EOFError``) or other damage, with the format when its signature names one. The
    decoder's own words and exception type go to the server log only (logger ``medclf``).

    >>> damaged_message(OSError("image file is truncated (12 bytes not processed)"), b"GIF89a")
    'The GIF file is damaged or incomplete (it ends before the image data does); export it again.'
    """
    log.warning("image not decoded, shown to the user as damaged: %s: %s", type(exc).__name__, exc,
                extra=SHOWN_TO_USER)
    kind = next((name for sig, name in _SIGNATURES.items() if data.startswith(sig)), None) or \
        ("WebP" if data[8:12] == b"WEBP" else "BMP" if data.startswith(b"BM") else "image")
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return f"The {kind} file is damaged or incomplete (it ends before the image data does); export it again."
    return f"The {kind} file is damaged (its image data cannot be decoded); export it again."


def _mostly_text(head: bytes) -> bool:
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return bool(head) and printable / len(head) > 0.95


def _open_first_frame(data: bytes, notes: list[str]) -> tuple[Image.Image, str]:
    """Open, check sizes, and load the first frame. Raises Pillow's own errors."""
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "image"
    _refuse_lying_jpeg(img, data)
    _draft_large_jpeg(img, notes)
    _refuse_implausible_size(img, data)
    if getattr(img, "is_animated", False):
        # is_animated looks for a second frame only; counting them all (n_frames)
        # would walk every frame of a hostile file with millions.
        notes.append(f"multi-frame {fmt}: first frame used")
        img.seek(0)
    img.load()
    return img, fmt


def _decode_pillow(data: bytes) -> DecodedImage:
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's remarks on malformed metadata
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img, fmt = _open_first_frame(data, notes)
            progressive = bool(img.info.get("progressive") or img.info.get("progression"))
            if img.width == 0 or img.height == 0:
                raise ImageError("The image has no pixels (zero width or height).")
            img = _shrink_early(img, notes)
            img = _exif_upright(img, notes)
            pixels = _pil_to_array(img, notes)
            damaged = fmt == "JPEG" and not progressive and _jpeg_runs_out(data)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"The image is too large to open safely (over {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_message(data)) from None
    except MemoryError:
        raise ImageError("The image is too large to decode with the memory available.") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on hostile input
        raise ImageError(damaged_message(exc, data)) from None
    damage = [_JPEG_DAMAGED] if damaged else []
    return DecodedImage(limit_size(pixels, notes), fmt, notes, damage)


def refuse_degenerate(img: DecodedImage) -> DecodedImage:
    """``img`` unchanged, or :class:`ImageError` when there is nothing to classify: a side under
    :data:`MIN_SIDE` pixels (a 1x1 image, a one-pixel line) or a blank picture (every pixel the same
    value: solid black, white or grey)."""
    pixels = img.pixels
    h, w = pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"The image is too small to classify ({w}x{h} pixels once decoded; at least "
                         f"{MIN_SIDE} pixels on each side are needed).")
    lo, hi = pixels.min(axis=(0, 1)), pixels.max(axis=(0, 1))
    if np.array_equal(lo, hi):
        raise ImageError("The image is blank (every pixel has the same value): there is nothing to classify.")
    return img


def load_image(source: str | os.PathLike | bytes | io.IOBase, *, frame: int | None = None) -> DecodedImage:
    """Decode a file path, bytes, or file-like object into a :class:`DecodedImage`.

    The format is sniffed from the bytes. DICOM goes through :mod:`medclf_core.io.dicom`
    (``frame`` picks one frame of a multi-frame series; default the middle one).
    Raises :class:`ImageError` with a readable message for anything that is not a
    decodable image, and for one with nothing to classify (see :func:`refuse_degenerate`).
    Data the decoder found damaged but could still show is listed in ``warnings``.
    """
    data = read_bytes(source)
    if looks_like_dicom(data):
        return refuse_degenerate(decode_dicom(data, frame=frame))
    return refuse_degenerate(_decode_pillow(data))


def as_gray_or_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as uint8 (H, W) or (H, W, 3): other dtypes scaled, a single band squeezed, alpha dropped."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        arr = to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    return arr


def to_model_input(pixels: np.ndarray, image_size: int | tuple[int, int], channels: int) -> np.ndarray:
    """Resize and convert ``pixels`` (uint8, (H, W) or (H, W, C)) to the model's input.

    Returns uint8 (size, size, channels). The aspect ratio is not kept (the images
    are squashed to a square), matching how the training data was prepared.
    This one function is used by training, prediction and Grad-CAM.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    h_out, w_out = (image_size, image_size) if isinstance(image_size, int) else image_size
    arr = as_gray_or_rgb_uint8(pixels)
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
