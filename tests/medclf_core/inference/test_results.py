"""medclf_core.inference.results: verdict words, overlays from a kept map, the one cache key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclf_core.inference.results import (BORDERLINE_MARGIN, HeatMap, Prediction, exported, headline, image_digest,
                                           result_key, table_row)


def _map(faithfulness=None, note=None) -> HeatMap:
    heat = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    deletion = None if faithfulness is None and note is None else {"faithfulness": faithfulness, "note": note}
    return HeatMap(heatmap=heat, image=np.zeros((6, 8), np.uint8), method="gradcam", class_index=1,
                   class_name="PNEUMONIA", faithfulness=faithfulness, deletion=deletion)


@pytest.mark.parametrize("score,words", [
    (0.3, "Faithfulness 0.30 (the model relies on the highlighted regions)."),
    (0.2999, "Faithfulness 0.30 (somewhat better than random regions)."),
    (0.11, "Faithfulness 0.11 (somewhat better than random regions)."),
    (0.1, "Faithfulness 0.10 (no better than random regions: do not read much into this map)."),
    (-0.0012, "Faithfulness 0.00 (no better than random regions: do not read much into this map)."),
])
def test_the_score_comes_with_its_verdict_in_words(score, words):
    assert _map(score).faithfulness_caption == words


def test_no_score_says_why():
    assert _map().faithfulness_caption == "Faithfulness: n/a (not computed)."
    assert _map(note="the blank image scores this class as high").faithfulness_caption == \
        "Faithfulness: n/a (the blank image scores this class as high)."


def test_the_overlay_is_drawn_at_the_image_size_from_a_smaller_map():
    hm = _map()
    assert hm.overlay(0.5).shape == (6, 8, 3) and hm.overlay(0.5).dtype == np.uint8
    assert not np.array_equal(hm.overlay(0.5), hm.overlay(0.9))
    scored = hm.scored({"faithfulness": 0.5, "note": None})
    assert scored.faithfulness == 0.5 and scored.heatmap is hm.heatmap and hm.faithfulness is None


def test_a_prediction_is_a_plain_dict_with_its_verdict_words():
    flagged = Prediction(label="NORMAL", probabilities={"NORMAL": 0.9}, ood=True, ood_reason="modality MR")
    assert json.loads(json.dumps(flagged)) == dict(flagged)
    assert flagged.flagged and "modality MR" in flagged.verdict_words
    clear = Prediction(label="NORMAL", probabilities={"NORMAL": 0.9}, ood=False)
    assert not clear.flagged and clear.verdict_words is None


def _card(**changes) -> dict:
    return {"run_dir": "models/chest", "created": "2026-01-01", **changes}


def test_the_key_changes_with_the_model_the_image_and_the_question():
    x = image_digest(b"x")
    base = result_key(_card(), x, "gradcam", 1)
    assert base == result_key(_card(), x, "gradcam", 1)
    others = [result_key(_card(created="2026-02-02"), x, "gradcam", 1),
              result_key(_card(run_dir="models/other"), x, "gradcam", 1),
              result_key(_card(ood={"threshold": 3.0}), x, "gradcam", 1),
              result_key(_card(calibration={"temperature": 1.5}), x, "gradcam", 1),
              result_key(_card(), image_digest(b"y"), "gradcam", 1),
              result_key(_card(), x, "scorecam", 1),
              result_key(_card(), x, "gradcam", 0)]
    assert all(k != base for k in others) and len(set(others)) == len(others)


CHEST = {"threshold": 0.75, "positive_class": "PNEUMONIA"}


def _chest(p_pneumonia: float, label: str) -> Prediction:
    return Prediction({"label": label, "probabilities": {"NORMAL": 1 - p_pneumonia, "PNEUMONIA": p_pneumonia},
                       **CHEST, "ood": False})


def test_the_headline_gives_p_positive_even_when_the_decision_is_the_less_likely_class():
    """Issue 24: NORMAL at P(PNEUMONIA) = 0.62 below a 0.75 threshold read 'NORMAL (38.0%)'."""
    h = _chest(0.62, "NORMAL").headline
    assert (h.decision, h.shown_class, h.probability, h.finding) == ("NORMAL", "PNEUMONIA", 0.62, False)
    assert h.title == "NORMAL (P(PNEUMONIA) = 62.0%)" and "38" not in h.title
    assert "below the threshold 75.0%" in h.sentence and not h.borderline
    above = _chest(0.9, "PNEUMONIA").headline
    assert above.finding and above.title == "PNEUMONIA (P(PNEUMONIA) = 90.0%)" and "at or above" in above.sentence


@pytest.mark.parametrize("p,borderline", [(0.70 - 1e-6, False), (0.71, True), (0.75, True), (0.79, True),
                                          (0.80 + 1e-6, False), (0.62, False)])
def test_borderline_within_the_margin_of_the_threshold(p, borderline):
    assert BORDERLINE_MARGIN == 0.05
    h = headline(_chest(p, "PNEUMONIA" if p >= 0.75 else "NORMAL"))
    assert h.borderline is borderline
    assert h.title.endswith(", borderline)") is borderline and ("Borderline" in h.sentence) is borderline


@pytest.mark.parametrize("p,shown", [(0.995, "P(PNEUMONIA) > 99%"), (0.9999999, "P(PNEUMONIA) > 99%"),
                                     (0.005, "P(PNEUMONIA) < 1%"), (0.0, "P(PNEUMONIA) < 1%"),
                                     (0.99, "P(PNEUMONIA) = 99.0%")])
def test_probabilities_shown_are_capped(p, shown):
    row = table_row(_chest(p, "PNEUMONIA" if p >= 0.75 else "NORMAL"))
    assert row["probability"] == shown
    assert all("100" not in v and v not in ("0.0%",) for k, v in row.items() if k.startswith("P("))


def test_a_multiclass_headline_is_the_top_class_and_its_probability():
    clear = headline({"label": "glioma", "probabilities": {"glioma": 0.8, "meningioma": 0.15, "none": 0.05}})
    assert clear.title == "glioma (P(glioma) = 80.0%)" and clear.threshold is None and not clear.borderline
    assert "no operating threshold" in clear.sentence
    close = headline({"label": "glioma", "probabilities": {"glioma": 0.46, "meningioma": 0.40, "none": 0.14}})
    assert close.borderline and "less than 10% apart" in close.sentence  # the two-class rule at 0.5: |p - 0.5| < 0.05


def test_a_refused_image_is_no_finding_in_the_table_or_the_exports():
    refused = {"label": "PNEUMONIA", "probabilities": {"NORMAL": 0.1, "PNEUMONIA": 0.9}, **CHEST, "ood": True,
               "ood_reason": "modality MR"}
    row = table_row(refused)
    assert row["decision"].startswith("out of distribution") and row["probability"] is None
    assert row["out-of-distribution reason"] == "modality MR" and row["P(PNEUMONIA)"] == "90.0%"
    assert exported(refused)["label"] is None and refused["label"] == "PNEUMONIA"
    assert exported({**refused, "ood": False})["label"] == "PNEUMONIA"
