"""medclf_core.trust.verdict: the out-of-distribution fields of one result, its warning, and the count over a folder."""

from __future__ import annotations

import numpy as np

from medclf_core.trust.verdict import NOT_CHECKED, ood_block, ood_message, verdict
from medclf_core.trust.ood import fit_gate


def test_verdict_convention():
    rng = np.random.default_rng(0)
    gate = fit_gate(rng.normal(size=(100, 4)), rng.integers(0, 2, 100), rng.normal(size=(40, 4)))
    use = {"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}
    assert verdict(None, None) == {**NOT_CHECKED, "ood_checks": [], "ood_refused_by": []}
    v = verdict(gate, np.zeros(4), use, {"Modality": "CR"})
    assert v["ood"] is False and v["ood_reason"] is None and v["ood_checks"] == ["features", "dicom_header"]
    v = verdict(gate, np.full(4, 50.0))
    assert v["ood"] is True and "far from the model's training images" in v["ood_reason"] and v["ood_score"] > 10
    v = verdict(None, None, use, {"Modality": "MR", "BodyPartExamined": "HEAD"})
    assert v["ood"] is True and v["ood_score"] is None and "modality MR" in v["ood_reason"]
    assert verdict(None, None, use, {"Modality": "CR"})["ood"] is None  # no gate, nothing flagged: not checked
    msg = ood_message(v)
    assert msg.startswith("This model is not for this image: the DICOM header says modality MR")  # the header's facts, not its looks
    assert msg.endswith("The model's answer is not shown as a finding.")
    assert ood_message({"ood": None}) is None


def test_the_lead_in_names_the_kind_of_refusal():
    """A refusal by the header's facts (modality, body part, the patient's age) says the model is not for the image;
    one by what the pixels show (feature gate, modality router, body-part probe, colour) says it looks unlike the
    training images; both say both. The walk-through's adult chest film read "does not look like" for its age."""
    rng = np.random.default_rng(0)
    gate = fit_gate(rng.normal(size=(100, 4)), rng.integers(0, 2, 100), rng.normal(size=(40, 4)))
    use = {"modalities": ["CR", "DX"], "body_parts": ["CHEST"], "age_years": [1, 5]}
    looks = "This image does not look like the images this model was trained on: "
    not_for = "This model is not for this image: "
    aged = verdict(gate, np.zeros(4), use, {"Modality": "CR", "PatientAge": "064Y"})
    assert aged["ood_refused_by"] == ["dicom_header"]
    assert ood_message(aged) == (not_for + "adult patient (64 years), but this model was trained on children aged 1-5. "
                                 "The model's answer is not shown as a finding.")
    assert ood_message(verdict(None, None, use, {"BodyPartExamined": "HEAD"})).startswith(not_for + "the DICOM header says body part HEAD")
    far = verdict(gate, np.full(4, 50.0), use, {"Modality": "CR", "PatientAge": "003Y"})
    assert far["ood_refused_by"] == ["features"] and ood_message(far).startswith(looks + "its features")
    routed = verdict(None, None, use, router={"CT": 0.99, "MRI": 0.0, "XRAY": 0.01})
    assert routed["ood_refused_by"] == ["modality_router"] and ood_message(routed).startswith(looks)
    both = verdict(gate, np.full(4, 50.0), use, {"Modality": "CR", "PatientAge": "064Y"})
    assert both["ood_refused_by"] == ["features", "dicom_header"]
    assert ood_message(both).startswith("This model is not for this image, and it does not look like the images "
                                        "this model was trained on: its features")
    # a result that does not say which check refused (an older one) keeps the general words
    assert ood_message({"ood": True, "ood_reason": "x"}).startswith(looks + "x.")
    assert verdict(gate, np.zeros(4), use, {"Modality": "CR"})["ood_refused_by"] == []


def test_ood_block_metrics_without_flagged():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4]])  # the last two are wrong
    b = ood_block(y, p, [False, False, True, True], ["NORMAL", "PNEUMONIA"], threshold=0.5, bootstrap=0)
    assert b["n_flagged"] == 2 and b["fraction_flagged"] == 0.5 and b["checked"]
    assert b["metrics_without_flagged"]["n"] == 2 and b["metrics_without_flagged"]["accuracy"] == 1.0
    b = ood_block(y, p, [None] * 4, ["NORMAL", "PNEUMONIA"], bootstrap=0)
    assert not b["checked"] and b["n_not_checked"] == 4 and b["metrics_without_flagged"] is None
    b = ood_block(y, p, [True] * 4, ["NORMAL", "PNEUMONIA"], bootstrap=0)
    assert b["fraction_flagged"] == 1.0 and b["metrics_without_flagged"] is None
