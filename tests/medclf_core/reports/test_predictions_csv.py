"""medclf_core.reports.predictions_csv: the predictions CSV holds results and base file names, never identifiers."""

from __future__ import annotations

import csv
import io

from bad_inputs import PATIENT_STRINGS

import numpy as np

from medclf_core.reports.predictions_csv import evaluation_csv, predictions_csv

RESULTS = [
    {"file": "/home/dr/uploads/ward3/chest_001.dcm", "label": "PNEUMONIA",
     "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8}, "threshold": 0.35, "positive_class": "PNEUMONIA",
     "notes": ["MONOCHROME1 inverted for display"],
     "dicom": {"PatientName": "Zzyzxqa^Quintessa^Marigold", "PatientID": "MRN-9988776655"}},
    {"file": "/home/dr/uploads/notes.png", "error": "This file is a text file, not an image."},
    {"file": "/tmp/=1+cmd(calc).png", "label": "NORMAL", "probabilities": {"NORMAL": 0.9, "PNEUMONIA": 0.1}},
    {"file": "Zzyzxqa_Quintessa.dcm", "label": "NORMAL", "probabilities": {"NORMAL": 0.6, "PNEUMONIA": 0.4}},
]


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_columns_and_values():
    rows = _rows(predictions_csv(RESULTS))
    assert list(rows[0]) == ["file", "label", "p_NORMAL", "p_PNEUMONIA", "threshold", "positive_class", "calibration",
                             "borderline", "ood", "ood_score", "ood_reason", "unfamiliar", "unfamiliar_score",
                             "unfamiliar_reason", "error", "notes"]
    # whose calibration made each row (walk-through, session 21: the CSV did not say, the CLI's JSON did)
    assert [r["calibration"] for r in rows] == ["card", "", "card", "card"]
    site = _rows(predictions_csv([{**RESULTS[0], "calibration": "site:wardA"}]))
    assert site[0]["calibration"] == "site:wardA"
    assert rows[0]["file"] == "chest_001.dcm" and rows[0]["label"] == "PNEUMONIA"
    assert float(rows[0]["p_PNEUMONIA"]) == 0.8 and float(rows[0]["threshold"]) == 0.35
    assert rows[0]["notes"] == "MONOCHROME1 inverted for display"
    assert rows[1]["file"] == "notes.png" and rows[1]["label"] == "" and "not an image" in rows[1]["error"]


def test_no_folders_no_header_values():
    text = predictions_csv(RESULTS[:3])
    assert "/home/dr" not in text and "ward3" not in text
    assert not any(s in text for s in PATIENT_STRINGS)


def test_identifying_values_are_scrubbed_from_file_names():
    text = predictions_csv(RESULTS, identifying=["Zzyzxqa", "Quintessa"])
    assert not any(s in text for s in PATIENT_STRINGS)
    assert "[redacted]_[redacted].dcm" in text


def test_formula_cells_are_neutralised():
    rows = _rows(predictions_csv(RESULTS))
    assert rows[2]["file"].startswith("'=")


def test_empty_results():
    assert predictions_csv([]).strip() == ("file,label,threshold,positive_class,calibration,borderline,ood,ood_score,"
                                           "ood_reason,unfamiliar,unfamiliar_score,unfamiliar_reason,error,notes")


def test_the_borderline_column_follows_the_headline_rule():
    """Walk-through: the CSV had no borderline column although the table shows one (the headline's rule:
    P(positive) less than 0.05 from the threshold); empty for a refused image (no decision) and a file not read."""
    chest = {"threshold": 0.7696, "positive_class": "PNEUMONIA", "ood": False}
    results = [{"file": "person1023.jpeg", "label": "NORMAL", "probabilities": {"NORMAL": 0.254, "PNEUMONIA": 0.746},
                **chest},
               {"file": "normal.jpeg", "label": "NORMAL", "probabilities": {"NORMAL": 0.995, "PNEUMONIA": 0.005},
                **chest},
               {"file": "brain.jpg", "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.04, "PNEUMONIA": 0.96},
                **chest, "ood": True, "ood_reason": "far away"},
               {"file": "corrupt.png", "error": "not an image"},
               {"file": "ct.png", "label": "CT", "probabilities": {"CT": 0.5, "MRI": 0.46, "XRAY": 0.04}}]
    assert [r["borderline"] for r in _rows(predictions_csv(results))] == ["true", "false", "", "", "true"]


def test_out_of_distribution_columns():
    results = [
        {"file": "a.dcm", "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.1, "PNEUMONIA": 0.9}, "ood": True,
         "ood_score": 41.5, "ood_reason": "the DICOM header says modality MR; this model is for modality CR or DX"},
        {"file": "b.png", "label": "NORMAL", "probabilities": {"NORMAL": 0.9, "PNEUMONIA": 0.1}, "ood": False,
         "ood_score": 3.25, "ood_reason": None},
        {"file": "c.png", "label": "NORMAL", "probabilities": {"NORMAL": 0.9, "PNEUMONIA": 0.1}, "ood": None,
         "ood_score": None},
        {"file": "d.png", "error": "not an image"},
    ]
    rows = _rows(predictions_csv(results))
    assert [r["ood"] for r in rows] == ["true", "false", "not checked", ""]
    assert float(rows[0]["ood_score"]) == 41.5 and rows[2]["ood_score"] == "" and rows[1]["ood_reason"] == ""
    assert "modality MR" in rows[0]["ood_reason"]


def test_a_refused_image_has_no_label_but_keeps_its_probabilities():
    """Issue 24: a refused image (ood true) is no finding, so its row gives no label (an MR DICOM was
    'PNEUMONIA' on the chest model); an accepted one keeps its label, and the input is not changed."""
    results = [{"file": "mr.dcm", "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.1, "PNEUMONIA": 0.9},
                "ood": True, "ood_reason": "modality MR"},
               {"file": "cxr.png", "label": "NORMAL", "probabilities": {"NORMAL": 0.8, "PNEUMONIA": 0.2}, "ood": False}]
    rows = _rows(predictions_csv(results))
    assert rows[0]["label"] == "" and rows[0]["ood"] == "true" and float(rows[0]["p_PNEUMONIA"]) == 0.9
    assert rows[1]["label"] == "NORMAL"
    assert results[0]["label"] == "PNEUMONIA"  # the export does not rewrite the caller's results


def test_unfamiliar_columns():
    """An unfamiliar result (a finding with a caution) says so with its score and reason; a result without the
    unfamiliar tier says "not checked"; an unreadable file leaves the cells empty."""
    shown = {"file": "a.png", "label": "yes", "probabilities": {"no": 0.2, "yes": 0.8}, "ood": False,
             "ood_score": 101.5, "unfamiliar": True, "unfamiliar_score": 101.5,
             "unfamiliar_reason": "unlike this model's training images"}
    rows = _rows(predictions_csv([shown, {**shown, "unfamiliar": None, "unfamiliar_score": None,
                                          "unfamiliar_reason": None}, {"file": "b.png", "error": "unreadable"}]))
    assert (rows[0]["unfamiliar"], float(rows[0]["unfamiliar_score"])) == ("true", 101.5)
    assert rows[0]["unfamiliar_reason"].startswith("unlike") and rows[0]["ood"] == "false"
    assert rows[1]["unfamiliar"] == "not checked" and rows[1]["unfamiliar_score"] == ""
    assert rows[2]["unfamiliar"] == ""


def test_an_evaluation_csv_gives_each_images_truth_decision_and_whether_it_was_right():
    """The Evaluate page's download: decided at the threshold as its metrics are; a refused image has no finding."""
    predictions = {"rel": ["NORMAL/a.png", "NORMAL/b.png", "PNEUMONIA/c.png", "PNEUMONIA/Doe_Jane.png"],
                   "files": ["/d/NORMAL/a.png", "/d/NORMAL/b.png", "/d/PNEUMONIA/c.png", "/d/PNEUMONIA/Doe_Jane.png"],
                   "y_true": np.array([0, 0, 1, 1]), "class_names": ["NORMAL", "PNEUMONIA"],
                   "probs": np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.1, 0.9]]),
                   "ood": [False, False, False, True], "ood_reason": [None, None, None, "unlike the training images"],
                   "ood_score": [1.0, 2.0, 3.0, 99.0], "unfamiliar": [False, True, False, False],
                   "unfamiliar_score": [1.0, 2.0, 3.0, None], "unfamiliar_reason": [None, "unlike", None, None]}
    rows = _rows(evaluation_csv(predictions, threshold=0.58, positive=1, calibration="site:wardA"))
    # walk-through, session 21: the cautioned image's score and reason, and whose calibration, were empty
    assert rows[1]["unfamiliar_score"] == "2" and rows[1]["unfamiliar_reason"] == "unlike"
    assert {r["calibration"] for r in rows} == {"site:wardA"}
    assert [r["true_label"] for r in rows] == ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"]
    assert [r["label"] for r in rows] == ["NORMAL", "PNEUMONIA", "NORMAL", ""]  # 0.55 < 0.58; refused: no label
    assert [r["correct"] for r in rows] == ["true", "false", "false", ""]
    assert [r["threshold"] for r in rows] == ["0.58"] * 4 and rows[1]["unfamiliar"] == "true"
    assert rows[2]["borderline"] == "true" and rows[0]["borderline"] == "false"
    assert rows[3]["ood"] == "true" and rows[3]["ood_reason"] == "unlike the training images"
    argmax = _rows(evaluation_csv(predictions, threshold=None, positive=1))  # no threshold: the top class
    assert [r["label"] for r in argmax][:3] == ["NORMAL", "PNEUMONIA", "PNEUMONIA"] and argmax[0]["threshold"] == ""


def test_an_evaluation_csv_of_a_folder_matches_the_evaluations_figures(trained_run, chest_sample):
    from medclf_core.inference.folder import evaluate_folder
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(trained_run)
    result = evaluate_folder(predictor, chest_sample, bootstrap=0, with_predictions=True)
    rows = _rows(evaluation_csv(result["predictions"], threshold=predictor.threshold, positive=predictor.positive))
    assert len(rows) == result["n"] == 80 and all("/" not in r["file"] for r in rows)
    from medclf_core.reports.evaluation_text import mistakes

    mis = mistakes(result["predictions"], threshold=predictor.threshold, positive=predictor.positive)
    assert [i for i, r in enumerate(rows) if r["correct"] == "false"] == list(mis["wrong"])  # the page's list
    assert [i for i, r in enumerate(rows) if r["correct"] == ""] == list(mis["refused"])
    assert {r["true_label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
