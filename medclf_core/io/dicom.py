"""DICOM decoding with pydicom: rescale, VOI window, MONOCHROME1, multi-frame, colour.

The result is an 8-bit display image, windowed the way a viewer would show it:

1. only the chosen frame is decoded (default: the middle one of a multi-frame file);
2. the modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence) gives
   real-world values such as Hounsfield units; enhanced multi-frame files keep
   these in their functional groups, which are read too;
3. the VOI LUT, else the first window centre/width (LINEAR or SIGMOID), else the
   full range maps them to 0..255;
4. MONOCHROME1 (white = low values) is inverted so that air is black.

Colour files (RGB, YBR, PALETTE COLOR) are converted to RGB. Compressed transfer
syntaxes decode through pydicom's plugins (pylibjpeg, pylibjpeg-openjpeg, Pillow);
when none can, the message names the package to install.

Patient identifiers are never copied into notes, errors or logs: messages name
only the problem, the transfer syntax, or an exception type. The file is parsed once
(:func:`medclf_core.io.dicom_header.read_dataset`, which keeps pydicom from logging header values),
and the header facts the app shows come from that same parse (``DecodedImage.dicom``).

This module builds on :mod:`medclf_core.io.pixels`, :mod:`~medclf_core.io.dicom_header` and :mod:`~medclf_core.io.deid` only;
:mod:`medclf_core.io.images` dispatches DICOM bytes here, never the other way round.

Example::

    >>> window(np.array([0.0, 40.0, 80.0]), center=40, width=80)
    array([  0, 129, 255], dtype=uint8)
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from medclf_core.io import pixels as _limits  # read at call time, so tests can lower the limits
from medclf_core.errors import ImageError, SHOWN_TO_USER, log
from medclf_core.io.dicom_header import read_dataset
from medclf_core.io.pixels import DecodedImage, limit_size, to_uint8

# Transfer syntax UID -> the package(s) that decode it, for "install X" messages.
DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg or Pillow",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg or Pillow",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg or python-gdcm",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg or python-gdcm",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg or pyjpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg or pyjpegls",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle or python-gdcm",  # RLE Lossless
}
_COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")


_DICOM_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
              b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
              b"UR", b"US", b"UT", b"UV"}


def looks_like_dicom(data: bytes) -> bool:
    """True for DICOM Part 10 files (``DICM`` at byte 128) and for preamble-less
    data sets that start with a group-0x0002 (file meta) or 0x0008 element: a
    little-endian tag followed by an explicit VR, or by a length that fits the file."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if len(data) < 8 or data[:2] not in (b"\x08\x00", b"\x02\x00"):
        return False
    if data[2:4] in (b"\x00\x00", b"\x05\x00", b"\x08\x00", b"\x16\x00", b"\x01\x00", b"\x02\x00", b"\x10\x00",
                     b"\x12\x00"):
        return True
    if data[4:6] in _DICOM_VRS:
        return True
    implicit_length = int.from_bytes(data[4:8], "little")
    return data[3] < 0x10 and 0 < implicit_length <= len(data) - 8


def decode_dicom(data: bytes, *, frame: int | None = None) -> DecodedImage:
    """Decode DICOM bytes (with or without the 128-byte preamble) to a display image.

    ``frame`` picks a frame of a multi-frame file (0-based; default the middle one).
    Raises :class:`ImageError` for anything that cannot be shown, never another
    exception type, and never with a header value in the message.
    """
    try:
        return _decode(data, frame)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("The DICOM image is too large to decode with the memory available.") from None
    except Exception as exc:  # noqa: BLE001 - hostile headers reach deep into pydicom and numpy
        log.warning("DICOM not decoded (%s); its text is not logged, it may quote a header value",
                    type(exc).__name__, extra=SHOWN_TO_USER)
        raise ImageError("The DICOM file has header values that cannot be interpreted; export it again.") from None


def _decode(data: bytes, frame: int | None) -> DecodedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings may quote header values
        return _decode_quietly(data, frame)


def _decode_quietly(data: bytes, frame: int | None) -> DecodedImage:
    from medclf_core.io.deid import dicom_facts  # deid loads pydicom's data dictionary: on the first DICOM only

    ds = read_dataset(data)
    notes: list[str] = []
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError("This DICOM file has no image (no pixel data): it may be a report or a structured document.")
    facts = dicom_facts(ds)  # before the decode below adds a file header of its own
    _assume_transfer_syntax(ds, notes)
    n_frames = _check_geometry(ds)
    index = _frame_index(n_frames, frame, notes)
    arr = _pixels(ds, index if n_frames > 1 else None)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and n_frames == 1:
        arr = arr[arr.shape[0] // 2]  # frames without NumberOfFrames: take the middle one
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    arr = _shrink_stored_values(arr, ds, photometric, notes)
    if photometric == "PALETTE COLOR" or int(ds.get("SamplesPerPixel", 1) or 1) >= 3 or arr.ndim == 3:
        pixels = _colour(arr, ds, photometric, notes)
    else:
        pixels = _grayscale(arr, ds, index, photometric, notes)
    return DecodedImage(limit_size(np.ascontiguousarray(pixels), notes), "DICOM", notes, dicom=facts)


def _assume_transfer_syntax(ds, notes: list[str]) -> None:
    """A data set saved without its file header has no Transfer Syntax UID; pixel
    decoding needs one, so record the encoding pydicom actually read it with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else (
        ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    notes.append("no DICOM file header; pixel data read as uncompressed")


def _check_geometry(ds) -> int:
    """Number of frames, after refusing sizes that are empty or too large to decode safely."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    if rows <= 0 or cols <= 0:
        raise ImageError("This DICOM file has no image size (Rows/Columns missing or zero).")
    samples = max(int(ds.get("SamplesPerPixel", 1) or 1), 1)
    bytes_per_sample = max(int(ds.get("BitsAllocated", 16) or 16), 8) // 8
    if rows * cols > _limits.MAX_PIXELS or rows * cols * samples * bytes_per_sample > _limits.MAX_DECODED_BYTES:
        raise ImageError(f"The DICOM image is too large to open safely ({cols}x{rows} pixels).")
    return n_frames


def _frame_index(n_frames: int, frame: int | None, notes: list[str]) -> int:
    """The 0-based frame to show: the requested one, else the middle one."""
    if n_frames == 1:
        if frame not in (None, 0):
            raise ImageError(f"Frame {frame + 1} does not exist; this DICOM has a single frame.")
        return 0
    index = n_frames // 2 if frame is None else frame
    if not 0 <= index < n_frames:
        raise ImageError(f"Frame {index + 1} does not exist; this DICOM has {n_frames} frames (1 to {n_frames}).")
    notes.append(f"multi-frame DICOM ({n_frames} frames): frame {index + 1} used")
    return index


def _pixels(ds, index: int | None) -> np.ndarray:
    """Decode one frame (or the only one), turning decoder failures into plain messages."""
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds, index=index))
    except MemoryError:
        raise
    except (NotImplementedError, RuntimeError) as exc:
        syntax = _transfer_syntax(ds)
        if "missing" in str(exc) or isinstance(exc, NotImplementedError):
            hint = DECODER_HINTS.get(str(syntax), "a pydicom pixel-data plugin for it")
            raise ImageError(f"This DICOM file is compressed as '{_syntax_name(syntax)}' and no installed decoder "
                             f"can read it: install {hint}.") from None
        raise ImageError(f"The compressed DICOM pixel data ('{_syntax_name(syntax)}') is damaged and cannot be "
                         "decoded.") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged pixel data
        log.warning("DICOM pixel data not decoded (%s)", type(exc).__name__,
                    extra=SHOWN_TO_USER)
        raise ImageError("The DICOM pixel data is damaged or incomplete and cannot be decoded; export it "
                         "again.") from None


def _shrink_stored_values(arr: np.ndarray, ds, photometric: str, notes: list[str]) -> np.ndarray:
    """Downscale a huge frame *before* the float conversions of rescale and windowing,
    which would otherwise need 8 bytes per pixel. Lookup-table data (palette colour,
    Modality LUT) is left alone: averaged indices would mean different values."""
    if max(arr.shape[:2]) <= _limits.MAX_SIDE or photometric == "PALETTE COLOR" or "ModalityLUTSequence" in ds:
        return arr
    return limit_size(arr, notes)


def _transfer_syntax(ds):
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def _syntax_name(syntax) -> str:
    return str(getattr(syntax, "name", None) or syntax or "unknown transfer syntax")


def _colour(arr: np.ndarray, ds, photometric: str, notes: list[str]) -> np.ndarray:
    """RGB uint8 from RGB/YBR (already converted to RGB by pydicom) or a palette."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        notes.append("palette colour DICOM converted to RGB")
    else:
        notes.append("colour DICOM")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8) or 8) if photometric != "PALETTE COLOR" else 16
        peak = float(arr.max()) if arr.size else 0.0
        arr = to_uint8(arr) if peak > 2**bits - 1 or bits > 16 else \
            np.clip(np.rint(arr / (2**bits - 1) * 255.0), 0, 255).astype(np.uint8)
    return arr


def _grayscale(arr: np.ndarray, ds, index: int, photometric: str, notes: list[str]) -> np.ndarray:
    """Modality LUT, then VOI LUT / window, then MONOCHROME1 inversion, to uint8."""
    values = _apply_modality(arr, ds, index, notes)
    pixels = _apply_voi(values, ds, index, notes)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
        notes.append("MONOCHROME1 inverted for display")
    return pixels


def _apply_modality(arr: np.ndarray, ds, index: int, notes: list[str]) -> np.ndarray:
    """Stored values to real-world values (Rescale Slope/Intercept or Modality LUT).

    Enhanced multi-frame files keep the rescale in their functional groups. A
    rescale the file gets wrong is ignored with a note rather than refusing the image.
    """
    from pydicom.pixels import apply_modality_lut

    try:
        if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
            return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        slope = _frame_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _frame_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
        return arr.astype(np.float64) * _finite(slope, 1.0) + _finite(intercept, 0.0)
    except Exception:  # noqa: BLE001 - a malformed rescale must not hide the image
        notes.append("the file's rescale slope/intercept cannot be read and was ignored")
        return arr.astype(np.float64)


def _apply_voi(values: np.ndarray, ds, index: int, notes: list[str]) -> np.ndarray:
    """VOI LUT, else the first window centre/width, else the full range, to uint8.

    A VOI LUT or window the file gets wrong (unparseable, zero width) is ignored
    with a note rather than refusing the image.
    """
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:
        try:
            pixels = to_uint8(apply_voi_lut(values, ds, index=0))
            notes.append("VOI LUT from the file applied")
            return pixels
        except Exception:  # noqa: BLE001 - a malformed LUT must not hide the image
            notes.append("the file's VOI LUT is malformed and was ignored; full range shown")
            return to_uint8(values)
    try:
        center = _first(_frame_value(ds, index, "FrameVOILUTSequence", "WindowCenter"))
        width = _first(_frame_value(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    except (TypeError, ValueError, IndexError, KeyError):
        center = width = None
        notes.append("the file's window centre/width cannot be read and was ignored; full range shown")
    if center is None or width is None or not math.isfinite(center) or not _finite(width, 0.0) > 0:
        return to_uint8(values)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    notes.append("window centre/width from the file applied")
    return window(values, center, width, function=function)


def _frame_value(ds, index: int, group_sequence: str, keyword: str):
    """A value from the top level, else from this frame's or the shared functional group."""
    if keyword in ds:
        return ds[keyword].value
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if not seq or i >= len(seq):
            continue
        inner = seq[i].get(group_sequence)
        if inner and keyword in inner[0]:
            return inner[0][keyword].value
    return None


def _finite(value, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _first(value) -> float | None:
    """Window values may be multi-valued; the first is the default view. None stays None."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        return float(value.split(b"\\" if isinstance(value, bytes) else "\\")[0])
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)


def window(values: np.ndarray, center: float, width: float, *, function: str = "LINEAR") -> np.ndarray:
    """VOI windowing (DICOM PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID) to uint8."""
    center, width = _finite(center, 0.0), max(_finite(width, 1.0), 1.0)
    values = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        scaled = 255.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -700, 700)))
    elif function == "LINEAR_EXACT":
        scaled = ((values - center) / width + 0.5) * 255.0
    else:
        scaled = ((values - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5) * 255.0
    return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)
