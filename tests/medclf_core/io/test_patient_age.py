"""medclf_core.io.dicom_header: the patient's age from PatientAge or, without one, from the birth date and study
date; and the chest model's population check refusing an adult whose header has only the dates."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from helpers import REPO, SAMPLES

from medclf_core.io.deid import safe_metadata
from medclf_core.io.dicom_header import (AGE_COMPUTED_FROM, age_from_dates, header_patient_age, parse_dicom_date,
                                         read_header)
from medclf_core.io.images import load_image
from medclf_core.trust.population import age_reason
from medclf_core.trust.verdict import verdict

CHEST_USE = json.loads((REPO / "models" / "chest-xray-pneumonia" / "card.json").read_text())["intended_use"]


@pytest.mark.parametrize("birth, on, age", [
    ("19400305", "20040826", "064Y"),    # birthday already passed that year
    ("19400905", "20040826", "063Y"),    # birthday still to come that year
    ("19400826", "20040826", "064Y"),    # the birthday itself
    ("19400827", "20040826", "063Y"),    # the day before the birthday
    ("20000229", "20040228", "003Y"),    # born on 29 February: not yet 4 on 28 February
    ("20000229", "20040229", "004Y"),
    ("20000229", "20050301", "005Y"),
    ("20031231", "20040101", "001D"),
    ("20040101", "20040101", None),      # under a day old: 000D reads as "unknown"
    ("20040101", "20040110", "001W"),
    ("20040115", "20040214", "004W"),    # a day short of a month
    ("20040115", "20040215", "001M"),
    ("20030827", "20040826", "011M"),    # a day short of a year
    ("20030826", "20040826", "001Y"),
    ("1940.03.05", "2004.08.26", "064Y"),  # the old ACR-NEMA form
    (dt.date(1940, 3, 5), dt.date(2004, 8, 26), "064Y"),
    ("20050101", "20040826", None),      # born after the study
    ("", "20040826", None),              # a de-identified file's blank birth date
    ("19400305", "", None),
    ("19400230", "20040826", None),      # not a date
    ("1940", "20040826", None),
    ("unknown", "20040826", None),
    (None, "20040826", None),
])
def test_age_from_dates(birth, on, age):
    assert age_from_dates(birth, on) == age


def test_parse_dicom_date():
    assert parse_dicom_date("19400305") == dt.date(1940, 3, 5) and parse_dicom_date(" 19400305 ") == dt.date(1940, 3, 5)
    assert parse_dicom_date(dt.datetime(1940, 3, 5, 12)) == dt.date(1940, 3, 5)
    for bad in ("", None, "19401305", "194003", "1940030512", "abc"):
        assert parse_dicom_date(bad) is None


def _dataset(**values):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_header_age_prefers_patient_age_then_the_first_study_date():
    assert header_patient_age(_dataset(PatientAge="045Y", PatientBirthDate="19400305", StudyDate="20040826")) == \
        ("045Y", None)
    computed = ("064Y", "birth date and study date")
    for age in (None, "", "000Y", "old"):  # missing, empty, the "unknown" placeholder, not an age
        extra = {} if age is None else {"PatientAge": age}
        assert header_patient_age(_dataset(PatientBirthDate="19400305", StudyDate="20040826", **extra)) == computed
    # StudyDate, else SeriesDate, else AcquisitionDate, else ContentDate
    assert header_patient_age(_dataset(PatientBirthDate="19400305", StudyDate="20040826", SeriesDate="19500101")) \
        == computed
    assert header_patient_age(_dataset(PatientBirthDate="19400305", StudyDate="", SeriesDate="19500101")) == \
        ("009Y", "birth date and series date")
    assert header_patient_age(_dataset(PatientBirthDate="19400305", AcquisitionDate="19450305")) == \
        ("005Y", "birth date and acquisition date")
    assert header_patient_age(_dataset(PatientBirthDate="19400305", ContentDate="19410305")) == \
        ("001Y", "birth date and content date")
    # no birth date, no study date, or a birth date after the study: no age
    assert header_patient_age(_dataset(PatientBirthDate="", StudyDate="20040826")) == (None, None)
    assert header_patient_age(_dataset(PatientBirthDate="19400305")) == (None, None)
    assert header_patient_age(_dataset(PatientBirthDate="20100101", StudyDate="20040826")) == (None, None)
    assert header_patient_age(_dataset()) == (None, None)


def _dicom_bytes(ds) -> bytes:
    raw = io.BytesIO()
    ds.save_as(raw, implicit_vr=True, little_endian=True)
    return raw.getvalue()


def test_an_adult_without_patient_age_is_refused_by_the_chest_model():
    """The walk-through's defect: an adult film with PatientBirthDate and StudyDate but no PatientAge was read by the
    paediatric chest model. Its age now comes from the dates, and the reason says so."""
    ds = read_header(_dicom_bytes(_dataset(PatientBirthDate="19400305", StudyDate="20040826")))
    facts = safe_metadata(ds)
    assert facts["PatientAge"] == "064Y" and facts[AGE_COMPUTED_FROM] == "birth date and study date"
    assert "PatientBirthDate" not in facts and "StudyDate" not in facts  # the dates themselves are not carried
    v = verdict(None, None, CHEST_USE, facts)
    assert v["ood"] is True
    assert v["ood_reason"] == ("adult patient (64 years, computed from the birth date and study date), "
                               "but this model was trained on children aged 1-5")
    # a child of 3 by the same dates is not refused; a very old patient's computed age is carried as 090Y
    child = safe_metadata(_dataset(PatientBirthDate="20010305", StudyDate="20040826"))
    assert child["PatientAge"] == "003Y" and age_reason(CHEST_USE, child) is None
    assert safe_metadata(_dataset(PatientBirthDate="19100305", StudyDate="20040826"))["PatientAge"] == "090Y"
    # a de-identified file (blank birth date): no age, nothing changes
    blank = safe_metadata(_dataset(PatientBirthDate="", StudyDate="20040826"))
    assert "PatientAge" not in blank and AGE_COMPUTED_FROM not in blank and age_reason(CHEST_USE, blank) is None


def test_the_committed_adult_chest_film_is_refused_through_the_decoder():
    """samples/dicom/CR_RG1_J2KI.dcm (born 1940, studied 2004, no PatientAge): the facts every caller checks
    (the Predict page and PACS from the decoded image, the CLI and folder runs through Predictor.dicom_facts)."""
    from medclf_core.inference.predictor import Predictor

    img = load_image(SAMPLES / "dicom" / "CR_RG1_J2KI.dcm")
    assert img.dicom.metadata["PatientAge"] == "064Y"
    predictor = Predictor.__new__(Predictor)  # only its card's intended use: no model is needed for the header facts
    predictor.intended_use = CHEST_USE
    for facts in (img.dicom.metadata, predictor.dicom_facts(img)):
        v = verdict(None, None, CHEST_USE, facts)
        assert v["ood"] is True and v["ood_reason"].startswith(
            "adult patient (64 years, computed from the birth date and study date), but "), v
