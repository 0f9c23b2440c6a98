"""medclf_core.trust.verdict: the out-of-distribution fields of one result, its warning, and the count over a folder."""

from __future__ import annotations

import numpy as np

from medclf_core.trust.verdict import NOT_CHECKED, ood_block, ood_message, verdict
from medclf_core.trust.ood import fit_gate


def test_verdict_convention():
    rng = np.random.default_rng(0)
    gate = fit_gate(rng.normal(size=(100, 4)), rng.integers(0, 2, 100), rng.normal(size=(40, 4)))
    use = {"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}
    assert verdict(None, None) == {**NOT_CHECKED, "ood_checks": []}
    v = verdict(gate, np.zeros(4), use, {"Modality": "CR"})
    assert v["ood"] is False and v["ood_reason"] is None and v["ood_checks"] == ["features", "dicom_header"]
    v = verdict(gate, np.full(4, 50.0))
    assert v["ood"] is True and "far from the model's training images" in v["ood_reason"] and v["ood_score"] > 10
    v = verdict(None, None, use, {"Modality": "MR", "BodyPartExamined": "HEAD"})
    assert v["ood"] is True and v["ood_score"] is None and "modality MR" in v["ood_reason"]
    assert verdict(None, None, use, {"Modality": "CR"})["ood"] is None  # no gate, nothing flagged: not checked
    msg = ood_message(v)
    assert msg.startswith("This image does not look like the images this model was trained on: ")
    assert msg.endswith("The model's answer is not shown as a finding.")
    assert ood_message({"ood": None}) is None


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
