"""The two tiers of the gate (refuse / unfamiliar) in medclf_core.trust.ood and the verdict built on them
(medclf_core.trust.verdict): version-1 gate files still load and keep their one threshold as the refuse tier."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.registry.store import GATE_FILE
from medclf_core.trust.ood import REFUSE_FACTOR, fit_gate, load_gate, score_caption, with_refuse_tier
from medclf_core.trust.verdict import ood_block, unfamiliar_message, verdict


def _gate(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 6))
    return fit_gate(x, (x[:, 0] > 0).astype(int), rng.normal(size=(200, 6))), rng


def _at(gate, score):
    """A feature row whose gate score is ``score``: a mean moved along the first eigenvector."""
    base = gate.means[0].astype(np.float64)
    direction = gate.components[:, 0].astype(np.float64)
    unit = gate.score((base + direction)[None])[0]
    return base + direction * (score / unit)


def test_the_score_caption_gives_each_threshold_its_own_value():
    """Walk-through: "score 255 (threshold 118, unfamiliar: 99th percentile ... | refuse: 1.75 x the unfamiliar
    threshold (67.51))" read as if 67.51 were the refuse threshold. Each tier now has its own value and rule."""
    gate, rng = _gate()
    with_refuse_tier(gate, 67.50924430904242)  # the chest model's unfamiliar threshold
    text = score_caption(gate, 254.621)
    assert text == ("Feature score 255; unfamiliar above 67.5 (99th percentile of the validation split's scores), "
                    "refused above 118 (1.75 x that).")
    one = fit_gate(rng.normal(size=(50, 6)), np.zeros(50), rng.normal(size=(10, 6)), threshold=3.0, rule="given")
    assert score_caption(one, 4.0) == "Feature score 4; refused above 3 (given)."


def test_the_unfamiliar_tiers_rule_survives_a_new_refuse_factor():
    """``refit-trust --refuse-factor`` re-tiers a two-tier gate: the unfamiliar rule must not gain a second
    "unfamiliar:" or keep the old refuse rule."""
    gate, _ = _gate()
    with_refuse_tier(gate, 10.0, 1.75)
    with_refuse_tier(gate, 10.0, 2.5)
    assert gate.near_rule == "99th percentile of the validation split's scores"
    assert gate.rule == "unfamiliar: 99th percentile of the validation split's scores | refuse: 2.5 x the " \
                        "unfamiliar threshold (10)"


def test_fit_gate_gives_two_tiers():
    gate, rng = _gate()
    assert gate.threshold == pytest.approx(REFUSE_FACTOR * gate.near_threshold)
    assert "unfamiliar: 99th percentile" in gate.rule and "refuse: 1.75 x" in gate.rule
    val = gate.score(rng.normal(size=(2000, 6)))
    assert 0.003 < np.mean(val > gate.near_threshold) < 0.03 and np.mean(val > gate.threshold) == 0
    mid = (gate.near_threshold + gate.threshold) / 2
    assert [gate.tier(s) for s in (gate.near_threshold * 0.5, mid, gate.threshold * 1.1, np.inf)] == \
        ["familiar", "unfamiliar", "refuse", "refuse"]
    one = fit_gate(rng.normal(size=(50, 6)), np.zeros(50), rng.normal(size=(10, 6)), threshold=3.0, rule="given")
    assert one.near_threshold is None and one.tier(4.0) == "refuse" and one.tier(2.9) == "familiar"
    with pytest.raises(ValueError):
        with_refuse_tier(gate, np.inf)


def test_two_tiers_survive_save_and_load(tmp_path):
    gate, _ = _gate()
    gate.save(tmp_path)
    back = load_gate(tmp_path)
    assert back.near_threshold == pytest.approx(gate.near_threshold) and back.threshold == gate.threshold
    assert back.summary()["near_threshold"] == pytest.approx(gate.near_threshold)


def test_a_version_1_gate_file_still_loads_with_its_threshold_as_the_refuse_tier(tmp_path):
    gate, _ = _gate()
    old = {k: v for k, v in vars(gate).items() if not k.startswith("_")}
    gate.save(tmp_path)
    with np.load(tmp_path / GATE_FILE) as z:
        arrays = {k: z[k] for k in z.files if k != "near_threshold"}
    arrays["version"] = np.int32(1)
    arrays["threshold"] = np.float64(old["near_threshold"])  # a version-1 gate: one threshold, the 99th percentile
    np.savez_compressed(tmp_path / GATE_FILE, **arrays)
    v1 = load_gate(tmp_path)
    assert v1.near_threshold is None and v1.threshold == pytest.approx(old["near_threshold"])
    x = _at(v1, v1.threshold * 1.2)
    r = verdict(v1, x)
    assert r["ood"] is True and r["unfamiliar"] is None and r["unfamiliar_score"] is None  # as before: refused
    assert verdict(v1, _at(v1, v1.threshold * 0.5))["ood"] is False
    two = with_refuse_tier(v1, v1.threshold)  # what training.refit.add_unfamiliar_tier does
    r = verdict(two, x)
    assert r["ood"] is False and r["unfamiliar"] is True and "unlike this model's training images" in \
        r["unfamiliar_reason"]


def test_verdict_fields_for_each_tier_and_each_refuse_reason():
    gate, _ = _gate()
    familiar = verdict(gate, _at(gate, gate.near_threshold * 0.5))
    assert (familiar["ood"], familiar["unfamiliar"], familiar["unfamiliar_reason"]) == (False, False, None)
    mid = verdict(gate, _at(gate, (gate.near_threshold + gate.threshold) / 2))
    assert mid["ood"] is False and mid["unfamiliar"] is True and mid["unfamiliar_score"] == mid["ood_score"]
    far = verdict(gate, _at(gate, gate.threshold * 2))
    assert far["ood"] is True and far["unfamiliar"] is False and "far from" in far["ood_reason"]
    # a header or router refusal wins over an unfamiliar score: refused, not also cautioned
    use = {"modalities": ["CR", "DX"], "age_years": [1, 5]}
    x = _at(gate, (gate.near_threshold + gate.threshold) / 2)
    aged = verdict(gate, x, use, {"Modality": "CR", "PatientAge": "045Y"})
    assert aged["ood"] is True and aged["unfamiliar"] is False and aged["ood_reason"].startswith("adult patient")
    routed = verdict(gate, _at(gate, 0.1), use, router={"CT": 0.02, "MRI": 0.97, "XRAY": 0.01})
    assert routed["ood"] is True and "calls it MRI" in routed["ood_reason"]
    assert routed["ood_checks"] == ["features", "modality_router"]
    assert verdict(gate, _at(gate, 0.1), use, router={"CT": 0.02, "MRI": 0.08, "XRAY": 0.9})["ood"] is False
    # no gate: the router alone still refuses; nothing refused and no gate stays "not checked"
    assert verdict(None, None, use, router={"CT": 0.95, "MRI": 0.0, "XRAY": 0.05})["ood"] is True
    assert verdict(None, None, use, router={"CT": 0.05, "MRI": 0.0, "XRAY": 0.95})["ood"] is None


def test_unfamiliar_message_quotes_an_other_source_figure_when_there_is_one():
    r = {"ood": False, "unfamiliar": True}
    assert unfamiliar_message({"unfamiliar": False}) is None and unfamiliar_message({"unfamiliar": None}) is None
    plain = unfamiliar_message(r)
    assert plain.startswith("Caution: this image is unlike this model's training images") and "accuracy" not in plain
    rec = {"dataset": "Sartaj", "n": 120, "metrics": {"accuracy": 0.873}}
    quoted = unfamiliar_message(r, rec)
    assert "(on 120 images from another source, its accuracy was 87.3%)" in quoted
    assert "Sartaj" not in quoted  # a data set's folder name means nothing to a clinician
    assert unfamiliar_message(r, [rec]) == quoted


def test_unfamiliar_message_quotes_the_lowest_and_highest_of_several_other_source_figures():
    """The brain card records two other sources (Navoneel 93.1% on 87, MedPix 52.3% on 256); the caution quoted
    only the newest, whichever it was."""
    r = {"ood": False, "unfamiliar": True}
    records = [{"n": 87, "metrics": {"accuracy": 0.931}}, {"n": 256, "metrics": {"accuracy": 0.523}},
               {"n": 10, "metrics": {}}, {"n": None, "metrics": {"accuracy": 0.1}}, {"n": "12", "metrics": None},
               {"n": "lots", "metrics": {"accuracy": 0.2}}, {"n": 5, "metrics": {"accuracy": "high"}}]
    assert ("(on other sources, its accuracy was 52.3% on 256 images to 93.1% on 87)"
            in unfamiliar_message(r, records))
    assert "accuracy" not in unfamiliar_message(r, records[2:])  # nothing usable: no figure


def test_ood_block_reports_coverage_and_unfamiliar():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4], [0.3, 0.7]])
    b = ood_block(y, p, [False, False, True, False, False], ["a", "b"], threshold=0.5, bootstrap=0,
                  unfamiliar=[False, True, False, True, None])
    assert b["coverage"] == pytest.approx(0.8) and b["n_unfamiliar"] == 2
    assert b["metrics_without_flagged"]["n"] == 4 and b["metrics_without_flagged"]["accuracy"] == 0.75
    assert ood_block(y, p, [False] * 5, ["a", "b"], bootstrap=0)["n_unfamiliar"] is None
