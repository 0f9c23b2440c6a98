"""medclf_core.inference.results: verdict words, overlays from a kept map, the one cache key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclf_core.inference.results import HeatMap, Prediction, image_digest, result_key


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
