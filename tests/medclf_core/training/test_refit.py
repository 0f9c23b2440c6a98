"""medclf_core.training.refit: the gate and the temperature of a registered run, refitted without retraining."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import CHEST_SAMPLE

from medclf_core.errors import MedclfError
from medclf_core.io.atomic import read_json
from medclf_core.registry.store import GATE_FILE
from medclf_core.training.refit import refit_trust
from medclf_core.trust.ood import load_gate
from medclf_core.trust.calibration import apply_temperature, stored_probabilities


def test_refit_writes_gate_and_card_and_keeps_decisions(refitted, older):
    run, res = refitted
    card = read_json(run, "card.json")
    old = read_json(older, "card.json")
    assert (run / GATE_FILE).is_file() and (run / GATE_FILE).stat().st_size < 300_000
    counts = old["dataset"]["counts"]
    ood, cal = card["ood"], card["calibration"]
    assert ood["n_train"] == sum(counts["train"].values()) and ood["n_val"] == sum(counts["val"].values())
    assert ood["rule"].startswith("unfamiliar: 99th percentile") and ood["near_threshold"] < ood["threshold"]
    assert 0 <= ood["val_fraction_flagged"] <= 0.1
    assert ood["threshold"] == res["ood"]["threshold"] and ood["dataset_fingerprint_matches"] is True
    t = cal["temperature"]
    assert 0.05 <= t <= 20 and cal["n"] == ood["n_val"] and cal["stored_predictions"] == "raw"
    assert cal["val_nll"][1] <= cal["val_nll"][0] + 1e-9
    assert cal["threshold_uncalibrated"] == pytest.approx(old["threshold"])
    # the threshold is mapped so that every stored test decision stays the same
    preds = read_json(run, "evaluation.json")["predictions"]
    raw = np.array([p["probabilities"] for p in preds])
    cal_p = apply_temperature(raw, t)
    np.testing.assert_array_equal(raw[:, 1] >= old["threshold"], cal_p[:, 1] >= card["threshold"])
    np.testing.assert_allclose(stored_probabilities(card, raw), cal_p)
    # everything else in the card is kept
    assert {k: v for k, v in card.items() if k not in ("ood", "calibration", "threshold", "name")} == \
        {k: v for k, v in old.items() if k not in ("ood", "calibration", "threshold", "name")}
    # a second refit maps from the uncalibrated threshold again, not from the calibrated one
    res2 = refit_trust(run, CHEST_SAMPLE)
    assert res2["threshold"] == pytest.approx(card["threshold"], abs=1e-9)
    assert read_json(run, "card.json")["calibration"]["threshold_uncalibrated"] == pytest.approx(old["threshold"])


def test_refit_refuses_another_dataset(older, tmp_path, pattern_dataset):
    from medclf_core.errors import DatasetError

    run = tmp_path / "r"
    shutil.copytree(older, run)
    with pytest.raises(DatasetError, match="classes"):
        refit_trust(run, pattern_dataset)
    part = tmp_path / "part"
    shutil.copytree(CHEST_SAMPLE, part)
    for f in sorted((part / "NORMAL").iterdir())[:5]:
        f.unlink()
    with pytest.raises(DatasetError, match="not the dataset the model was trained on"):
        refit_trust(run, part)
    assert not (run / GATE_FILE).exists()


def test_a_refuse_factor_given_to_refit_is_the_runs_from_then_on(refitted, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(refitted[0], run)
    near = read_json(run, "card.json")["ood"]["near_threshold"]
    res = refit_trust(run, CHEST_SAMPLE, refuse_factor=2.5)
    card = read_json(run, "card.json")
    assert card["config"]["ood_refuse_factor"] == 2.5 and card["ood"]["rule"].endswith(f"2.5 x the unfamiliar "
                                                                                      f"threshold ({near:.4g})")
    assert card["ood"]["threshold"] == pytest.approx(2.5 * near) == res["ood"]["threshold"]
    assert load_gate(run).threshold == pytest.approx(2.5 * near)
    with pytest.raises(MedclfError, match="refuse_factor must be at least 1"):
        refit_trust(run, CHEST_SAMPLE, refuse_factor=0.5)  # refused before any image is read
    refit_trust(run, CHEST_SAMPLE)  # no factor given: the run's stays
    assert read_json(run, "card.json")["ood"]["threshold"] == pytest.approx(2.5 * near)
