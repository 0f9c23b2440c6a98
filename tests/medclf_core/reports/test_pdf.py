"""The printable PDF report: the facts a reader needs, the research-use notice, and no patient identifiers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import page_count, page_texts, pdf_text
from medclf_core.formatting import percent, probability_text
from medclf_core.reports.pdf import NOTICE, report_bytes, report_file_name, write_report, write_reports

PATIENT_DICOM = "CR_RG1_J2KI.dcm"  # PatientName 'CompressedSamples^RG1', PatientID '9RG1'
MRN = "9988776655"


@pytest.fixture(scope="module")
def predictor(trained_run):
    from medclf_core.inference.predictor import Predictor

    return Predictor.from_run(trained_run)


@pytest.fixture(scope="module")
def patient_header():
    import pydicom

    from helpers import SAMPLES

    ds = pydicom.dcmread(SAMPLES / "dicom" / PATIENT_DICOM, stop_before_pixels=True)
    name = str(ds.PatientName)
    assert name and "^" in name  # the fixture really carries a patient name
    return {"name": name, "parts": [p for p in name.split("^") if len(p) > 4], "id": str(ds.PatientID)}


@pytest.fixture(scope="module")
def reports(predictor, dicom_samples, sample_images, patient_header, tmp_path_factory):
    """Reports for a DICOM renamed to carry its patient's name and an MRN, a PNG/JPEG sample and a bad file."""
    tmp = tmp_path_factory.mktemp("report-inputs")
    src = next(p for p in dicom_samples if p.name == PATIENT_DICOM)
    named = tmp / f"{patient_header['parts'][0]}_MRN-{MRN}_chest.dcm"
    shutil.copy(src, named)
    bad = tmp / "broken.png"
    bad.write_bytes(b"not an image")
    results = predictor.predict_files([named, sample_images[0], bad])
    out = tmp_path_factory.mktemp("reports")
    return results, write_reports(predictor, results, out), out


def test_one_pdf_per_readable_image(reports):
    results, written, out = reports
    assert len(written) == 2 and sorted(out.iterdir()) == sorted(written)  # no temporaries left
    assert [("report" in r) for r in results] == [True, True, False]
    for path in written:
        assert path.read_bytes().startswith(b"%PDF")


def test_the_report_holds_classes_decision_threshold_card_and_notice(reports, predictor):
    results, written, _ = reports
    for r, path in zip(results, written, strict=False):
        text = pdf_text(path.read_bytes())
        for name in predictor.class_names:
            assert name in text
        assert NOTICE in text
        assert f"Decision threshold: {percent(predictor.threshold)}" in text  # as the page shows it
        assert f"P({predictor.class_names[predictor.positive]})" in text
        assert f"Decision: {r['label']} (P({predictor.class_names[predictor.positive]})" in text  # the headline
        for c, p in r["probabilities"].items():
            assert probability_text(p) in text  # capped at >99% / <1%
        assert "Calibration in use: temperature scaling" in text and "validation split" in text
        # the map the CLI made for it: method, target class and its faithfulness score with the verdict words
        assert "Grad-CAM" in text and f"{r['label']} (red = regions" in text
        assert re.search(r"Faithfulness\n(-?\d\.\d\d \((the model relies|somewhat|no better)|n/a)", text), text
        assert "tiny-chest" in text and "simple_cnn" in text
        assert "n = 12" in text  # the card's test metrics come with their n
        assert "Out-of-distribution" in text or "OUT OF DISTRIBUTION" in text


def test_no_patient_identifier_in_the_report(reports, patient_header):
    results, written, _ = reports
    dicom_report = written[0]
    data = dicom_report.read_bytes()
    text = pdf_text(data)
    assert "[redacted]" in text  # the file name was shown, scrubbed
    for needle in [patient_header["name"], *patient_header["parts"], patient_header["id"], MRN, "MRN"]:
        assert needle.lower() not in text.lower(), needle
        assert needle.encode() not in data, needle  # nor in the metadata or anywhere else in the file
    assert patient_header["parts"][0] not in dicom_report.name and MRN not in dicom_report.name
    assert str(Path(results[0]["file"]).parent) not in text  # no folder path


def test_ood_verdict_intended_use_and_scrubbed_reason(predictor, tmp_path):
    from medclf_core.registry.card import ModelCard

    card = ModelCard.from_dict({**predictor.card.to_dict(), "intended_use": {
        "summary": "Adult frontal chest radiographs", "modalities": ["CR", "DX"], "body_parts": ["CHEST"],
        "not_for": ["children"]}})
    result = {"file": "/secret/ward/Doe_Jane_MRN-12345.png", "label": "PNEUMONIA",
              "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8}, "threshold": 0.35, "positive_class": "PNEUMONIA",
              "ood": True, "ood_score": 12.5, "ood_reason": "DICOM Modality MR for Doe^Jane is not CR, DX",
              "PatientName": "Doe^Jane"}
    px = np.tile(np.arange(64, dtype=np.uint8), (48, 1))
    path = write_report(result, px, np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64), card,
                        tmp_path / "r.pdf", identifying=["Doe^Jane", "Doe", "Jane"])
    text = pdf_text(path.read_bytes())
    assert "Verdict: refused, OUT OF DISTRIBUTION" in text and "not a finding" in text
    assert "Decision: " not in text  # a refused image gets no decision headline
    assert "Decision threshold: 35.0%" in text and "80.0%" in text
    assert "Adult frontal chest radiographs" in text and "CR, DX / CHEST" in text and "children" in text
    assert "Doe" not in text and "Jane" not in text and "12345" not in text and "secret" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["r.pdf"]


def test_without_gate_heatmap_or_threshold_and_with_non_latin_names(tmp_path):
    card = {"name": "demo", "class_names": ["Ödem", "肺炎", "other"], "created": "2026-01-01T00:00:00+00:00"}
    result = {"file": "x.png", "label": "other", "probabilities": {"Ödem": 0.1, "肺炎": 0.2, "other": 0.7},
              "ood": None}
    text = pdf_text(report_bytes(result, np.zeros((20, 30, 3), np.uint8), None, card))
    assert "Ödem" in text and "argmax" in text and "not checked" in text and "No heat map" in text
    assert "Intended use" in text and NOTICE in text


def test_cli_predict_report(trained_run, sample_images, tmp_path, capsys):
    from medclf_core.cli.commands import main

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"x")
    out = tmp_path / "reports"
    rc = main(["predict", str(trained_run), str(sample_images[0]), str(bad), "--report", str(out), "--json"])
    assert rc == 2  # a rejected file still gives exit status 2; the readable one got its report
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pdfs = sorted(out.glob("*.pdf"))
    assert len(pdfs) == 1 and results[0]["report"] == str(pdfs[0]) and "report" not in results[1]
    assert pdfs[0].read_bytes().startswith(b"%PDF")


def test_report_file_name_is_de_identified():
    name = report_file_name("/ward 3/Doe_Jane_MRN-12345_chest.dcm", ["Doe", "Jane"], prefix="007_")
    assert name.startswith("007_") and name.endswith("_chest_report.pdf")
    assert not any(s in name for s in ("Doe", "Jane", "12345", "ward", "/", "[", " "))
    assert report_file_name("x-ray 1.png") == "x-ray-1_report.pdf"


def test_a_model_without_heat_map_still_gets_its_report(predictor, sample_images, tmp_path, monkeypatch):
    from medclf_core.explain import cams as explain

    def no_cam(*a, **k):
        raise ValueError("no spatial layer")

    monkeypatch.setattr(explain, "heatmaps", no_cam)
    results = predictor.predict_files([sample_images[0]])
    written = write_reports(predictor, results, tmp_path)
    assert len(written) == 1 and "No heat map" in pdf_text(written[0].read_bytes())


def test_the_report_names_method_target_faithfulness_calibration_and_the_headline(tmp_path):
    """Issue 24: the PDF says which heat map it shows (method, target class), how far to trust it
    (faithfulness with its verdict words), which calibration made the probabilities, and the headline:
    the decision with P(positive class), borderline, and no probability printed as 100% or 0%."""
    from medclf_core.inference.results import HeatMap

    card = {"name": "chest-demo", "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.75,
            "positive_class": "PNEUMONIA", "calibration": {"method": "temperature scaling (validation NLL)",
                                                           "temperature": 0.74, "fitted_on": "val", "n": 779}}
    result = {"file": "a.png", "label": "NORMAL", "probabilities": {"NORMAL": 0.28, "PNEUMONIA": 0.72},
              "threshold": 0.75, "positive_class": "PNEUMONIA", "ood": False, "ood_score": 3.2}
    px = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heat = HeatMap(heatmap=px / 255.0, image=px, method="scorecam", class_index=1, class_name="PNEUMONIA",
                   faithfulness=0.05)
    text = pdf_text(report_bytes(result, px, heat, card))
    assert "Verdict: accepted (the image passed the out-of-distribution check)" in text
    assert "Decision: NORMAL (P(PNEUMONIA) = 72.0%, borderline)" in text and "28.0%" in text
    assert "below the threshold 75.0%" in text and "Borderline" in text
    assert "Score-CAM" in text and "PNEUMONIA (red = regions" in text
    assert "0.05 (no better than random regions: do not read much into this map)" in text
    assert "Calibration in use: temperature scaling (validation NLL), T = 0.74, fitted on the model's validation " \
           "split (n = 779)" in text
    sure = {**result, "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.0001, "PNEUMONIA": 0.9999}}
    text = pdf_text(report_bytes(sure, px, heat, {**card, "calibration": None}))
    assert "P(PNEUMONIA) > 99%" in text and "<1%" in text and "100.0%" not in text and "0.000" not in text
    assert "Calibration in use: none" in text


def test_the_report_names_the_classes_in_the_cards_plain_words():
    """The brain model's report said "decision yes when P(yes) >= 75.0%" under a "tumour" headline."""
    from medclf_core.inference.results import HeatMap

    card = {"name": "brain-demo", "class_names": ["no", "yes"], "threshold": 0.75, "positive_class": "yes",
            "intended_use": {"summary": "demo", "class_labels": {"no": "no tumour", "yes": "tumour"}}}
    result = {"file": "a.png", "label": "yes", "probabilities": {"no": 0.1, "yes": 0.9}, "threshold": 0.75,
              "positive_class": "yes", "ood": False, "class_labels": {"no": "no tumour", "yes": "tumour"}}
    px = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heat = HeatMap(heatmap=px / 255.0, image=px, method="gradcam", class_index=1, class_name="yes")
    text = pdf_text(report_bytes(result, px, heat, card))
    assert "Decision: tumour (P(tumour) = 90.0%)" in text and "decision tumour when P(tumour) >= 75.0%" in text
    assert "no tumour" in text and "tumour (red = regions" in text and "P(yes)" not in text
    assert "The red mark on the tumour bar is the threshold." in text  # walk-through, round three: "yes bar"
    assert "no (no tumour), yes (tumour)" in text  # the card's classes with their words
    refused = pdf_text(report_bytes({**result, "ood": True, "ood_reason": "far"}, px, None, card))
    assert "Model output (not a finding): tumour (P(tumour) = 90.0%)" in refused


def test_a_finding_carries_the_cards_known_mimics_and_a_negative_does_not():
    """MedPix: the brain model called 62% of other brain disease tumour; the report says so under a tumour finding."""
    mimics = "it also calls other brain disease tumour (110 of 178 MedPix slices)."
    card = {"name": "brain-demo", "class_names": ["no", "yes"], "threshold": 0.75, "positive_class": "yes",
            "intended_use": {"summary": "demo", "finding_mimics": mimics}}
    result = {"file": "a.png", "label": "yes", "probabilities": {"no": 0.1, "yes": 0.9}, "threshold": 0.75,
              "positive_class": "yes", "ood": False}
    px = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    finding = re.sub(r"\s+", " ", pdf_text(report_bytes(result, px, None, card)))
    assert f"Known limit of this model: {mimics}" in finding
    negative = {**result, "label": "no", "probabilities": {"no": 0.9, "yes": 0.1}}
    assert "Known limit" not in pdf_text(report_bytes(negative, px, None, card))
    assert "Known limit" not in pdf_text(report_bytes({**result, "ood": True, "ood_reason": "far"}, px, None, card))


def test_an_unfamiliar_image_is_a_finding_with_its_caution_and_a_site_calibration_is_named():
    """Issue 24: the second tier (unlike the training images, not refused) and a site's calibration reach the PDF."""
    card = {"name": "chest-demo", "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.4, "positive_class": "PNEUMONIA",
            "calibration": {"temperature": 1.2, "fitted_on": "val"},
            "site_calibration": {"site": "north", "date": "2026-12-06T10:00:00", "temperature": 1.8, "threshold": 0.4}}
    result = {"file": "a.png", "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.3, "PNEUMONIA": 0.7},
              "threshold": 0.4, "positive_class": "PNEUMONIA", "ood": False, "ood_score": 90.0, "unfamiliar": True,
              "unfamiliar_reason": "unlike this model's training images"}
    px = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    text = pdf_text(report_bytes(result, px, None, card))
    assert "Verdict: accepted with a caution, UNFAMILIAR: unlike this model's training images." in text
    assert "passed, the image resembles the training images" not in text
    assert "Decision: PNEUMONIA" in text
    assert "Calibration in use: site 'north': T = 1.8, threshold 0.4, fitted on the site's own images (2026-12-06)" in text


CHEST_CARD = {  # the bundled chest model's card, as far as the report prints it
    "name": "chest-xray-pneumonia", "task": "Chest X-ray: pneumonia vs normal", "class_names": ["NORMAL", "PNEUMONIA"],
    "positive_class": "PNEUMONIA", "architecture": "efficientnet_lite0", "input_shape": [224, 224, 1],
    "threshold": 0.77, "threshold_method": "balanced", "created": "2026-12-06T15:15:30",
    "metrics": {"split": "test", "n": 779, "accuracy": 0.965, "auc": 0.998, "sensitivity": 0.958, "specificity": 0.985,
                "ci95": {"accuracy": [0.953, 0.977], "auc": [0.997, 0.999]}},
    "calibration": {"method": "temperature scaling (validation NLL, T >= 1: never sharpened)", "temperature": 1.0,
                    "fitted_on": "val", "n": 779},
    "intended_use": {"summary": "Research demo: flags pneumonia on a frontal chest radiograph of a child (the training "
                                "images are pediatric AP films from one Chinese hospital).",
                     "modalities": ["CR", "DX"], "body_parts": ["CHEST"],
                     "population": "pediatric (1-5 years), Guangzhou Women and Children's Medical Center",
                     "not_for": ["adults (not validated)", "lateral films", "CT or MRI", "any clinical decision"]}}
CHEST_RESULT = {"file": "person1023_bacteria_2954.jpeg", "label": "NORMAL", "threshold": 0.77,
                "probabilities": {"NORMAL": 0.254, "PNEUMONIA": 0.746}, "positive_class": "PNEUMONIA", "ood": False,
                "ood_score": 33.1}
CARD_KEYS = ("Name", "Task", "Classes", "Architecture", "Input", "Accuracy (test split)", "ROC-AUC (test split)",
             "Sensitivity (test split)", "Specificity (test split)", "Figures computed on", "Operating threshold",
             "Intended use", "Modalities / body parts", "Population", "Not for", "Figures", "Model created")


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_one_image_report_fills_a_page_before_it_starts_the_next(method):
    """Walk-through: a one-image chest report ran to 8 pages (Score-CAM: 6), pages 2-8 each one model-card row on
    an otherwise blank page. The rows flow on a page and move on only when it is full: at most 2 pages, every
    page with more than the notice and one row on it, and every card row printed once."""
    from medclf_core.inference.results import HeatMap

    px = np.tile(np.arange(224, dtype=np.uint8), (224, 1))
    heat = HeatMap(heatmap=px / 255.0, image=px, method=method, class_index=0, class_name="NORMAL", faithfulness=0.0)
    data = report_bytes(CHEST_RESULT, px, heat, CHEST_CARD, opacity=0.45)
    pages = page_texts(data)
    assert len(pages) == page_count(data) and 1 <= len(pages) <= 2, [p[:3] for p in pages]
    for k, page in enumerate(pages):
        assert any(NOTICE in line for line in page)  # the notice on every page (its header and footer)
        body = [line for line in page if NOTICE not in line]
        assert len(body) > 4, (k, body)  # never a page holding a single row (a key and its value's 1-3 lines)
    text = pdf_text(data)
    assert [key for key in CARD_KEYS if key in text.splitlines()] == list(CARD_KEYS)  # each row, in order


def test_the_report_prints_the_opacity_and_threshold_as_the_page_shows_them():
    """Walk-through: the slider said 0.45, the PDF "opacity 0.5"; the page said 77.0%, the PDF "0.770"."""
    px = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    text = pdf_text(report_bytes(CHEST_RESULT, px, px / 255.0, CHEST_CARD, opacity=0.3))
    assert "Heat map (opacity 0.30)" in text
    assert f"Decision threshold: {percent(0.77)} (decision PNEUMONIA when P(PNEUMONIA) >= {percent(0.77)})" in text
    assert f"{percent(0.77)} on P(PNEUMONIA) (balanced)" in text  # the card's operating threshold
    assert "0.770" not in text and "77.0%" in text
    # Walk-through, round two: the CLI's PDF (default 0.40) and the page's (0.45) differed; one default now
    assert "Heat map (opacity 0.45)" in pdf_text(report_bytes(CHEST_RESULT, px, px / 255.0, CHEST_CARD))
    from medclf_core.cli.parser import build_parser
    from medclf_core.explain.render import OVERLAY_OPACITY

    assert build_parser().parse_args(["predict", "m", "a.png"]).opacity == OVERLAY_OPACITY == 0.45


def test_a_cross_validated_runs_figures_are_not_called_a_test_split():
    """Train helper's walk-through: a small-data run's out-of-fold figures were printed under '(test split)'."""
    from medclf_core.formatting import CROSS_VALIDATION
    from medclf_core.registry.card import ModelCard
    from medclf_core.reports.pdf import _card_facts

    card = ModelCard.from_dict({"name": "small", "class_names": ["NORMAL", "PNEUMONIA"],
                                "metrics": {"n": 80, "accuracy": 0.95, "split": CROSS_VALIDATION}})
    facts = dict(_card_facts(card))
    assert "Accuracy (cross-validated)" in facts and not any("test split" in k for k in facts)
    assert facts["Figures computed on"] == "out-of-fold predictions of all 80 images"


def test_a_site_calibrated_report_names_the_sites_threshold_and_where_the_card_figures_were_measured():
    """With a site's calibration in use the PDF said "Operating threshold 63.9% ... (balanced)" (the card's rule)
    beside test-split sensitivity measured at the card's 77.0%, and "Decision at the model's operating threshold"."""
    from medclf_core.inference.results import HeatMap
    from medclf_core.trust.sites import site_card

    card = {"name": "chest-demo", "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.77, "positive_class":
            "PNEUMONIA", "threshold_method": "balanced", "metrics": {"split": "test", "accuracy": 0.9,
                                                                    "sensitivity": 0.93, "specificity": 0.85}}
    site = site_card(card, {"site": "wardA", "temperature": 1.2, "threshold": 0.639,
                            "rule": {"threshold": "sensitivity >= 0.95 on the site's images"},
                            "target": {"value": 0.95}, "after": {"sensitivity": 0.9, "n_positive": 20},
                            "warnings": [{"kind": "misses_target", "confirm": True}]})
    result = {"file": "a.png", "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8},
              "threshold": 0.639, "positive_class": "PNEUMONIA", "ood": False, "calibration": "site:wardA"}
    px = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heat = HeatMap(heatmap=px / 255.0, image=px, method="gradcam", class_index=1, class_name="PNEUMONIA")
    text = " ".join(pdf_text(report_bytes(result, px, heat, site)).split())
    assert "(balanced)" not in text and "model's operating threshold" not in text
    assert "Operating threshold (site 'wardA')" in text and "sensitivity >= 0.95" in text
    # the site's own check, and that it was saved over its warning (session 21)
    assert text.count("checked on held-back halves: sensitivity 0.900 (n = 20, target 0.95); saved over a warning: "
                      "its checked sensitivity misses the target") == 2  # the threshold line and the calibration line
    assert "Decision at the threshold of site 'wardA'" in text
    assert "at the model card's threshold 77.0%, not the site's" in text
    plain = " ".join(pdf_text(report_bytes({**result, "calibration": "card", "threshold": 0.77}, px, heat,
                                           card)).split())
    assert "(balanced)" in plain and "Decision at the model's operating threshold" in plain
    assert "not the site's" not in plain
