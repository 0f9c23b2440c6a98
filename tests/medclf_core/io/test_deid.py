"""medclf_core.io.deid: the identifier list, finding and redacting identifiers, safe display fields."""

from __future__ import annotations

import io

import numpy as np
import pytest
from bad_inputs import PATIENT, PATIENT_STRINGS, dicom_bytes, gradient

from medclf_core.errors import ImageError
from medclf_core.io.deid import (IDENTIFYING_KEYWORDS, IDENTIFYING_TAGS, REDACTED, deidentify, identifying_values,
                                 redact, safe_file_label, safe_metadata)
from medclf_core.io.dicom_header import read_dataset


@pytest.fixture
def ds():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    data = dicom_bytes(gradient(16, 16), Modality="CR", BodyPartExamined="CHEST", ViewPosition="PA",
                       StudyDate="20240102", PatientSex="F")
    header = read_dataset(data)  # pixel data included, as the app has it after decoding
    item = Dataset()
    item.PerformingPhysicianName = "Nestorova^Ilse"  # a PN nested in a non-identifying sequence
    header.ProcedureCodeSequence = Sequence([item])
    header.add_new(0x00091010, "LO", "private vendor note Kwazimodo")
    return header


def test_annex_e_basic_profile_core_attributes_are_listed():
    must = {"PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs", "AccessionNumber",
            "InstitutionName", "ReferringPhysicianName", "StudyDate", "StudyInstanceUID", "SOPInstanceUID",
            "DeviceSerialNumber", "StationName", "OperatorsName", "PatientTelephoneNumbers", "ImageComments"}
    assert must <= IDENTIFYING_KEYWORDS
    assert len(IDENTIFYING_TAGS) == len(IDENTIFYING_KEYWORDS) > 200  # every keyword is a real DICOM attribute


def test_identifying_values_finds_names_ids_dates_nested_and_private(ds):
    values = identifying_values(ds)
    for s in ("Zzyzxqa^Quintessa^Marigold", "Zzyzxqa", "Quintessa", "MRN-9988776655", "19230405", "20240102",
              "Saint Obscurus Infirmary", "Vexleroux^Ottoline", "Nestorova^Ilse", "private vendor note Kwazimodo",
              "Quintessa Zzyzxqa"):
        assert s in values, s
    assert "CHEST" not in values and "CR" not in values
    assert values == sorted(values, key=lambda v: (-len(v), v))


def test_redact_scrubs_every_form_of_a_name(ds):
    text = "Failed for ZZYZXQA^Quintessa^Marigold (Quintessa Zzyzxqa, MRN-9988776655) at Saint Obscurus Infirmary"
    out = redact(text, identifying_values(ds))
    assert not any(s.lower() in out.lower() for s in PATIENT_STRINGS)
    assert out.startswith("Failed for ") and REDACTED in out


def test_redact_leaves_short_fragments_alone():
    assert redact("CT of the chest", ["F", "CT"]) == "CT of the chest"


def test_safe_metadata_shows_the_image_not_the_patient(ds):
    meta = safe_metadata(ds)
    assert meta["Modality"] == "CR" and meta["BodyPartExamined"] == "CHEST" and meta["ViewPosition"] == "PA"
    assert meta["Rows"] == 16 and meta["Columns"] == 16 and meta["NumberOfFrames"] == 1
    assert meta["PhotometricInterpretation"] == "MONOCHROME2"
    assert meta["TransferSyntax"] == "Explicit VR Little Endian"
    flat = repr(meta)
    assert not any(s in flat for s in PATIENT_STRINGS) and "20240102" not in flat


def test_safe_metadata_reads_bytes_paths_and_uploads(tmp_path):
    data = dicom_bytes(np.stack([gradient(8, 8)] * 3))
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        assert safe_metadata(source)["NumberOfFrames"] == 3


def test_safe_metadata_of_a_non_dicom_is_an_image_error():
    with pytest.raises(ImageError):
        safe_metadata(b"")


def test_the_header_without_identifiers_shows_none_and_the_identifiers_are_all_found(ds):
    """(The "show header" view, deid.header_rows, was removed: nothing but this test used it.)"""
    hidden = repr(deidentify(ds))
    assert not any(s in hidden for s in PATIENT_STRINGS) and "Nestorova" not in hidden and "Kwazimodo" not in hidden
    assert "CHEST" in hidden and "Pixel Data" in hidden  # the image and its description stay
    shown = repr(identifying_values(ds))
    assert PATIENT["PatientName"] in shown and "Nestorova" in shown


def test_deidentify_removes_identifiers_and_keeps_the_image(ds):
    clean = deidentify(ds)
    assert identifying_values(clean) == []
    assert "PatientName" not in clean and "PatientName" in ds  # the original is untouched
    assert clean.Modality == "CR" and clean.Rows == 16
    assert "MediaStorageSOPInstanceUID" not in clean.file_meta


def test_safe_file_label_drops_folders_and_scrubs_names(ds):
    label = safe_file_label("/uploads/ward 3/Zzyzxqa_Quintessa.dcm", identifying_values(ds))
    assert label == f"{REDACTED}_{REDACTED}.dcm"
    assert safe_file_label("C:/exports/scan_001.png") == "scan_001.png"


# ---------------------------------------------------------------------------- one file-name rule (issue 17 item 12)

def _rg1_like_header():
    """Like pydicom's RG1_J2KI.dcm: the patient is "CompressedSamples^RG1" and a derivation code's
    scheme designator, nested in an identifying sequence, is "DCM"."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    header = read_dataset(dicom_bytes(gradient(16, 16), Modality="CR"))
    header.PatientName, header.PatientID = "CompressedSamples^RG1", "9RG1"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121320", "DCM", "Uncompressed predecessor"
    source = Dataset()
    source.PurposeOfReferenceCodeSequence = Sequence([code])
    header.SourceImageSequence = Sequence([source])
    return header


def test_ordinary_file_names_are_left_alone():
    values = identifying_values(_rg1_like_header())
    assert {"RG1", "9RG1"} <= set(values) and "DCM" not in values  # a code scheme is no identifier
    for name in ("RG1_J2KI.dcm", "RG3_J2KR.DCM", "person1000_bacteria_2931.jpeg", "NORMAL2-IM-1427-0001.jpeg",
                 "IM-0115-0001.jpeg", "scan.final.png", "dcm_export_3.png", "noext", "record_1.png"):
        assert safe_file_label(name, values) == name  # ...but not out of ordinary file names


def test_file_names_lose_header_identifiers_and_mrn_like_tokens(ds):
    values = identifying_values(ds)
    cases = {
        "/uploads/ward 3/Zzyzxqa_Quintessa_MRN-9988776655.dcm": f"{REDACTED}_{REDACTED}_{REDACTED}.dcm",
        "C:\\exports\\zzyzxqa-quintessa-marigold chest.png": f"{REDACTED} chest.png",  # the whole name at once
        "Zzyzxqa^Quintessa.dcm": f"{REDACTED}^{REDACTED}.dcm",
        "chest_mrn12345_pa.png": f"chest_{REDACTED}_pa.png",
        "PatientID 0042.png": f"{REDACTED}.png",
        "study 19230405 chest.jpg": f"study {REDACTED} chest.jpg",
        "00000001_000.png": f"{REDACTED}_000.png",  # a run of 7+ digits is taken as a record number
        "ACC7731902.dcm": f"{REDACTED}.dcm",
        "QuintessaXray.png": "QuintessaXray.png",  # inside a longer word: not the value
    }
    for name, expected in cases.items():
        assert safe_file_label(name, values) == expected, name
    assert safe_file_label("Zzyzxqa_Quintessa_MRN-9988776655.dcm") == f"Zzyzxqa_Quintessa_{REDACTED}.dcm"


def test_the_predictions_csv_uses_the_same_rule():
    from medclf_core.reports.predictions_csv import predictions_csv

    values = identifying_values(_rg1_like_header()) + ["Zzyzxqa", "Quintessa"]
    probs = {"NORMAL": 0.4, "PNEUMONIA": 0.6}
    text = predictions_csv([{"file": "/srv/up/RG1_J2KI.dcm", "label": "PNEUMONIA", "probabilities": probs},
                            {"file": "Zzyzxqa_Quintessa_MRN-9988776655.dcm", "label": "NORMAL",
                             "probabilities": probs}], identifying=values)
    assert "RG1_J2KI.dcm" in text and f"{REDACTED}_{REDACTED}_{REDACTED}.dcm" in text
    assert not any(s in text for s in PATIENT_STRINGS)


def test_safe_metadata_carries_patient_age_capped_at_90():
    """PatientAge reaches the refuse rule (the card's age range) through the display facts; an age over 89 years,
    which can identify a patient, is carried as 090Y."""
    from pydicom.dataset import Dataset

    from medclf_core.io.deid import safe_metadata

    ds = Dataset()
    ds.Modality, ds.PatientAge = "CR", "045Y"
    assert safe_metadata(ds)["PatientAge"] == "045Y"
    ds.PatientAge = "097Y"
    assert safe_metadata(ds)["PatientAge"] == "090Y"
    ds.PatientAge = "unknown"
    assert "PatientAge" not in safe_metadata(ds)
