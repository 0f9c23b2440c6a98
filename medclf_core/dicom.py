"""DICOM decoding with pydicom: rescale, VOI window, MONOCHROME1, multi-frame, colour.

The result is an 8-bit display image, windowed the way a viewer would show it
(VOI LUT or window centre/width from the file; otherwise the full range).
Patient identifiers are never copied into notes or errors.
"""

from __future__ import annotations

import io

import numpy as np

from medclf_core.errors import ImageError
from medclf_core.images import DecodedImage, _limit_size, to_uint8


def decode_dicom(data: bytes, *, frame: int | None = None) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    notes: list[str] = []
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, OSError, TypeError, AttributeError, KeyError) as exc:
        raise ImageError(f"The DICOM file is damaged and cannot be read ({type(exc).__name__}).") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError("This DICOM file has no image (no pixel data): it may be a report or a structured document.")
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageError(
            f"This DICOM file is compressed as '{name}' and no installed decoder can read it "
            "(install pylibjpeg with pylibjpeg-openjpeg / pylibjpeg-libjpeg, or Pillow with OpenJPEG)."
        ) from exc
    except Exception as exc:  # pydicom raises many types for damaged pixel data
        raise ImageError(f"The DICOM pixel data is damaged and cannot be decoded ({type(exc).__name__}).") from None

    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        index = n_frames // 2 if frame is None else frame
        if not 0 <= index < n_frames:
            raise ImageError(f"Frame {index} does not exist; this DICOM has {n_frames} frames.")
        arr = arr[index]
        notes.append(f"multi-frame DICOM ({n_frames} frames): frame {index + 1} used")

    if samples == 3 or arr.ndim == 3:
        # pydicom already converts YCbCr to RGB when it decodes colour pixel data
        pixels = to_uint8(arr)
        notes.append("colour DICOM")
        return DecodedImage(_limit_size(np.ascontiguousarray(pixels), notes), "DICOM", notes)

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        pixels = to_uint8(apply_voi_lut(values, ds, index=0))
        notes.append("VOI LUT from the file applied")
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        pixels = window(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
        notes.append("window centre/width from the file applied")
    else:
        pixels = to_uint8(values)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
        notes.append("MONOCHROME1 inverted for display")
    return DecodedImage(_limit_size(np.ascontiguousarray(pixels), notes), "DICOM", notes)


def _first(value) -> float:
    """Window values may be multi-valued; the first is the default view."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear VOI windowing (DICOM PS3.3 C.11.2.1.2) to uint8."""
    width = max(float(width), 1.0)
    scaled = ((values - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
