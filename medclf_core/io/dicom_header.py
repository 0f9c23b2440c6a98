"""Parse DICOM bytes into a pydicom Dataset, the one way medclf does it.

pydicom is told not to validate values as it reads (its warnings and log lines quote the value,
which may be a patient's name), and a damaged file becomes an :class:`ImageError` with a plain
sentence. :mod:`medclf_core.io.deid` (identifiers) and :mod:`medclf_core.io.dicom` (pixels) both
parse through here, so a file is never read with other settings. Builds on :mod:`medclf_core.io.pixels`.
It also reads the patient's age, the one way: :func:`header_patient_age` takes ``PatientAge`` or, when that is
missing or not an age, computes it from ``PatientBirthDate`` and the study's date (:func:`age_from_dates`).

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

import datetime as dt
import io
import re
import warnings

from medclf_core.errors import ImageError, SHOWN_TO_USER, log
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
        log.warning("DICOM not parsed (%s); its text is not logged, it may quote a header value",
                    type(exc).__name__, extra=SHOWN_TO_USER)
        raise ImageError("The DICOM file is damaged or incomplete and cannot be read; export it again.") from None


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


#: The header-facts key (:func:`medclf_core.io.deid.safe_metadata`) saying a ``PatientAge`` was computed from dates.
AGE_COMPUTED_FROM = "PatientAgeComputedFrom"
#: Where the age comes from when the header has no ``PatientAge``: the birth date and the first of these dates.
STUDY_DATE_KEYWORDS = {"StudyDate": "study date", "SeriesDate": "series date", "AcquisitionDate": "acquisition date",
                       "ContentDate": "content date"}
_DATE = re.compile(r"^\s*(\d{4})[.-]?(\d{2})[.-]?(\d{2})\s*$")  # DICOM DA "YYYYMMDD" (old ACR-NEMA "YYYY.MM.DD")


def parse_dicom_date(value) -> dt.date | None:
    """A DICOM date (``"19400305"``; a ``datetime.date``; the old ``"1940.03.05"``) as a date, else None.

    >>> parse_dicom_date("19400305"), parse_dicom_date("20040230"), parse_dicom_date("")
    (datetime.date(1940, 3, 5), None, None)
    """
    if isinstance(value, dt.date):
        return value if not isinstance(value, dt.datetime) else value.date()
    m = _DATE.match(str(value)) if value is not None else None
    try:
        return dt.date(*(int(g) for g in m.groups())) if m else None
    except ValueError:  # 30 February, month 13, ...
        return None


def age_from_dates(birth, on) -> str | None:
    """The age on date ``on`` of a patient born on ``birth`` (DICOM dates), as a DICOM ``PatientAge``: whole years
    (``"064Y"``) from one year on, else whole months, weeks or days; None when either date is not a date, the
    birth date is after ``on``, or the patient is under a day old (``000D`` reads as "unknown").

    >>> age_from_dates("19400305", "20040826"), age_from_dates("19400905", "20040826"), age_from_dates("x", "2004")
    ('064Y', '063Y', None)
    """
    born, day = parse_dicom_date(birth), parse_dicom_date(on)
    if born is None or day is None or born > day:
        return None
    not_yet = (day.month, day.day) < (born.month, born.day)  # this year's birthday still to come
    years = day.year - born.year - not_yet
    if years >= 1:
        return f"{years:03d}Y" if years <= 999 else None
    months = (day.year - born.year) * 12 + day.month - born.month - (day.day < born.day)
    days = (day - born).days
    if months >= 1:
        return f"{months:03d}M"
    return f"{days // 7:03d}W" if days >= 7 else (f"{days:03d}D" if days else None)


def header_patient_age(ds) -> tuple[str | None, str | None]:
    """The patient's age in a DICOM header as ``(age, computed_from)``: ``PatientAge`` with ``computed_from``
    None; or, when it is missing, empty or not an age, the age from ``PatientBirthDate`` and the first
    date of :data:`STUDY_DATE_KEYWORDS` that the header has, with ``computed_from`` saying so (``"birth date
    and study date"``); ``(None, None)`` when neither gives an age (a de-identified file's blank birth date)."""
    value = ds.get("PatientAge")
    if parse_patient_age(value) is not None:
        return str(value).strip(), None
    birth = ds.get("PatientBirthDate")
    for keyword, words in STUDY_DATE_KEYWORDS.items():
        on = ds.get(keyword)
        if parse_dicom_date(on) is not None:
            age = age_from_dates(birth, on)
            return (age, f"birth date and {words}") if age else (None, None)
    return None, None
