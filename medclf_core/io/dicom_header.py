"""Parse DICOM bytes into a pydicom Dataset, the one way medclf does it.

pydicom is told not to validate values as it reads (its warnings and log lines quote the value,
which may be a patient's name), and a damaged file becomes an :class:`ImageError` with a plain
sentence. :mod:`medclf_core.io.deid` (identifiers) and :mod:`medclf_core.io.dicom` (pixels) both
parse through here, so a file is never read with other settings. Builds on :mod:`medclf_core.io.pixels`.

Example::

    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.Modality = "CR"
    >>> raw = io.BytesIO()
    >>> ds.save_as(raw, implicit_vr=True, little_endian=True)
    >>> read_dataset(raw.getvalue()).Modality
    'CR'
"""

from __future__ import annotations

import io
import re
import warnings

from medclf_core.errors import ImageError
from medclf_core.io.pixels import read_bytes


def read_dataset(data: bytes, *, stop_before_pixels: bool = False):
    """A pydicom Dataset from bytes, or :class:`ImageError` if it cannot be parsed."""
    import pydicom

    quiet_pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise ImageError(f"The DICOM file is damaged and cannot be read ({type(exc).__name__}).") from None


def quiet_pydicom() -> None:
    """Stop pydicom from validating values as it reads: its validation warnings and
    log lines quote the offending value, which may be a patient's name or ID.
    medclf never wants header values in a log, so this is set process-wide."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE


def read_header(source):
    """A pydicom Dataset without pixel data, from a path, bytes or file-like upload.

    For a file whose pixels are decoded as well, use ``load_image(source).dicom`` instead:
    one parse gives both. Raises :class:`medclf_core.errors.ImageError` if it is not readable DICOM.
    """
    return read_dataset(read_bytes(source), stop_before_pixels=True)


_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}
#: Ages above this are shown as "090Y" (90 or older): an exact high age can identify a patient (HIPAA safe harbor).
MAX_SHOWN_AGE_YEARS = 89


def parse_patient_age(value) -> float | None:
    """A DICOM ``PatientAge`` (``"045Y"``, ``"006M"``, ``"003W"``, ``"010D"``; a bare number is years) in years,
    or None when it is missing, zero (``000Y`` is a common placeholder for "unknown") or not an age string
    (never an error: a damaged header never refuses).

    >>> parse_patient_age("045Y"), parse_patient_age("018M"), parse_patient_age("003W"), parse_patient_age("old")
    (45.0, 1.5, 0.06, None)
    """
    if value is None:
        return None
    m = _AGE.match(str(value))
    if not m:
        return None
    years = round(int(m.group(1)) * _UNIT_YEARS[m.group(2).upper()], 2)
    return years if years > 0 else None


def shown_patient_age(value) -> str | None:
    """The ``PatientAge`` a result may carry: the header's string, ``"090Y"`` for any age over 89 years, None
    when it is not an age. Only the refuse rule reads it (the card's age range); it is never displayed."""
    years = parse_patient_age(value)
    if years is None:
        return None
    return "090Y" if years > MAX_SHOWN_AGE_YEARS else str(value).strip().upper()
