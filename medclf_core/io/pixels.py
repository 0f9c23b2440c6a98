"""The decoded-image type, the size limits, and reading an upload's bytes.

This is the bottom layer of image decoding: :mod:`medclf_core.io.dicom` (pydicom) and
:mod:`medclf_core.io.images` (Pillow, and the dispatch by content) both build on it, and
:mod:`medclf_core.io.deid` reads DICOM headers through :func:`read_bytes`. It imports
neither of them, so the layers import one way only: ``images -> dicom -> pixels``,
``deid -> pixels``.

The limits are read at call time (``pixels.MAX_SIDE``), so a test can lower them with
``monkeypatch.setattr(pixels, "MAX_SIDE", ...)``.

Example::

    >>> read_bytes(b"raw upload")
    b'raw upload'
    >>> to_uint8(np.array([[0.0, 0.5], [1.0, np.nan]]))
    array([[  0, 128],
           [255,   0]], dtype=uint8)
    >>> notes = []
    >>> limit_size(np.zeros((2 * MAX_SIDE, 10), np.uint8), notes).shape
    (4096, 5)
    >>> notes
    ['large image (10x8192) downscaled to 5x4096 on load']
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from medclf_core.errors import ImageError, SHOWN_TO_USER, log

# Images larger than this many pixels are refused as likely decompression bombs
# (a 16k x 16k grayscale scan is still accepted; MAX_DECODED_BYTES bounds colour).
MAX_PIXELS = 16384 * 16384
# Decoded images whose longer side exceeds this are downscaled on load; no model
# here needs more and it bounds memory per upload.
MAX_SIDE = 4096
# Uploads bigger than this are refused before decoding.
MAX_FILE_BYTES = 512 * 1024 * 1024
# Refuse images whose decoded pixels (at the size they will be decoded) would need
# more memory than this: one upload must not be able to exhaust the server.
MAX_DECODED_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class DicomFacts:
    """What the app may know of a DICOM file's header, taken from the parse that decoded its pixels.

    ``metadata`` holds only non-identifying display fields (:func:`medclf_core.io.deid.safe_metadata`:
    modality, body part, size, frames, ...). ``identifying`` lists the file's identifying strings
    (:func:`medclf_core.io.deid.identifying_values`), kept only to scrub file names and exported text;
    it is left out of ``repr`` so that a log line of the image never shows a patient's name.
    """

    metadata: dict
    identifying: list[str] = field(default_factory=list, repr=False)


@dataclass
class DecodedImage:
    """An image ready for display and for :func:`medclf_core.io.images.to_model_input`.

    ``pixels`` is uint8, (H, W) for grayscale or (H, W, 3) for colour.
    ``notes`` are plain-language remarks on how it was decoded.
    ``warnings`` say the data is damaged although it decoded (the decoder's corrupt-data
    warnings): the picture may be partly grey or garbled, and a prediction on it is suspect.
    ``dicom`` holds the header facts of a DICOM file (None for other formats, or when the
    header cannot be summarised), so a caller never parses the file a second time.
    """

    pixels: np.ndarray
    source_format: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dicom: DicomFacts | None = field(default=None, repr=False)


def check_upload_size(n_bytes: int, limit: int | None = None) -> None:
    """Raise :class:`ImageError` when an upload of ``n_bytes`` is empty or over ``limit``
    (default :data:`MAX_FILE_BYTES`).

    Call it before reading an upload into memory (the app knows the size first).

    >>> check_upload_size(0)
    Traceback (most recent call last):
    ...
    medclf_core.errors.ImageError: The file is empty (0 bytes).
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    if n_bytes <= 0:
        raise ImageError("The file is empty (0 bytes).")
    if n_bytes > limit:
        raise ImageError(f"The file is too large ({n_bytes / 2**20:.0f} MB); the limit is {limit // 2**20} MB.")


def read_bytes(source: str | os.PathLike | bytes | io.IOBase) -> bytes:
    """The raw bytes of a path, bytes object or file-like object, never more than the limit.

    A seekable file-like object (Streamlit's ``UploadedFile``) is read from its start,
    so the same upload can be decoded more than once.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, io.IOBase) or hasattr(source, "read"):
        try:
            if getattr(source, "seekable", lambda: False)():
                source.seek(0)
            data = source.read(MAX_FILE_BYTES + 1)
        except (OSError, ValueError) as exc:
            log.warning("upload not read: %s: %s", type(exc).__name__, exc,
                        extra=SHOWN_TO_USER)
            raise ImageError("The upload could not be read (the transfer may have been cut off); upload it "
                             "again.") from None
        if isinstance(data, str):
            raise ImageError("The upload is text, not an image.")
    else:
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{path.name} is a folder, not an image file.")
        if not path.is_file():
            raise ImageError(f"File not found: {path.name}")
        try:
            check_upload_size(path.stat().st_size)
            data = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ImageError(f"The file {path.name} could not be read ({reason}).") from None
    check_upload_size(len(data))
    return bytes(data)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8 by its own range (min -> 0, max -> 255).

    A constant image maps to zeros rather than dividing by zero; NaN and infinite
    values (damaged float images) count as the minimum.
    """
    if array.dtype == np.uint8:
        return array
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.asarray(array, dtype=np.float64)
        finite = np.isfinite(a)
        if not finite.all():
            a = np.where(finite, a, np.nan)
        if not finite.any():
            return np.zeros(a.shape, dtype=np.uint8)
        lo, hi = np.nanmin(a), np.nanmax(a)
        if not np.isfinite(hi - lo) or hi <= lo:
            return np.zeros(a.shape, dtype=np.uint8)
        out = (np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def limit_size(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Downscale so the longer side is at most :data:`MAX_SIDE` (area averaging); the
    downscale is recorded in ``notes``."""
    h, w = pixels.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return pixels
    if pixels.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        pixels = pixels.astype(np.float32)  # OpenCV cannot resize int32 or big-endian arrays
    pixels = np.ascontiguousarray(pixels)
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    notes.append(f"large image ({w}x{h}) downscaled to {size[0]}x{size[1]} on load")
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
