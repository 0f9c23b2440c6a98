"""medclf_core.inference.results: verdict words, overlays from a kept map, the one cache key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclf_core.explain.faithfulness import WORSE_THAN_RANDOM
from medclf_core.inference.results import (BORDERLINE_MARGIN, REASON, HeatMap, Prediction, exported,
                                           feature_score_caption, gallery_caption, headline, image_digest, result_key,
                                           results_table, table_row)


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
    (-0.2999, "Faithfulness -0.30 (no better than random regions: do not read much into this map)."),
    (-0.3, "Faithfulness -0.30 (worse than random regions: do not rely on this map)."),
    (-0.63, "Faithfulness -0.63 (worse than random regions: do not rely on this map)."),  # a CT, the modality model
])
def test_the_score_comes_with_its_verdict_in_words(score, words):
    assert WORSE_THAN_RANDOM == -0.3
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
    assert row["decision"].startswith("out of distribution") and row["probability"] == ""  # empty, not "None"
    assert row["borderline"] == row["unfamiliar"] == "" and row["out of distribution"] == "yes"
    assert row[REASON] == "modality MR" and row["P(PNEUMONIA)"] == "90.0%"
    assert exported(refused)["label"] is None and refused["label"] == "PNEUMONIA"
    assert exported(refused)["borderline"] is None  # no decision, so neither borderline nor not
    assert exported({**refused, "ood": False})["label"] == "PNEUMONIA"


def _files() -> list[dict]:
    """The walk-through's batch: a borderline film, an unfamiliar one, a refused one and a corrupt file."""
    return [{"file": "person1023_bacteria_2954.jpeg", **_chest(0.746, "NORMAL"), "ood": False, "unfamiliar": False},
            {"file": "CR_RG1_J2KI.dcm", **_chest(0.65, "NORMAL"), "ood": False, "unfamiliar": True,
             "unfamiliar_reason": "unlike this model's training images (score 71.8 above 67.5)"},
            {"file": "brain_yes_y0.jpg", **_chest(0.956, "PNEUMONIA"), "ood": True, "ood_reason": "far away"},
            {"file": "corrupt.png", "error": "This file is not an image Pillow or pydicom can read. " + "x" * 80}]


def test_an_unreadable_file_keeps_every_column_and_puts_its_message_in_a_note_column_last():
    """Walk-through: one corrupt file's long 'not read: ...' in the decision column pushed probability,
    borderline and out of distribution out of sight. Now the decision says "not read" and the message sits
    in the last column; every row has every column, as text (never None)."""
    rows = results_table(_files())
    columns = list(rows[0])
    assert all(list(r) == columns for r in rows)
    assert columns[:6] == ["file", "decision", "probability", "borderline", "unfamiliar", "out of distribution"]
    assert columns[6:8] == ["P(NORMAL)", "P(PNEUMONIA)"] and columns[-2:] == [REASON, "note"]
    assert all(isinstance(v, str) for r in rows for v in r.values())
    bad = rows[3]
    assert bad["decision"] == "not read" and bad["note"].startswith("This file is not an image")
    assert bad["probability"] == "" and bad["out of distribution"] == ""
    assert rows[0]["probability"] == "P(PNEUMONIA) = 74.6%" and rows[0]["borderline"] == "yes"
    assert table_row(_chest(0.2, "NORMAL"))["borderline"] == "no"  # said, as unfamiliar and refused are
    assert "note" not in results_table(_files()[:3])[0]  # no file unread: no empty note column


def test_the_table_and_the_gallery_mark_an_unfamiliar_image():
    """Walk-through: an unfamiliar film read "out of distribution: no" with no caution in the table or gallery."""
    rows = results_table(_files())
    assert [r["unfamiliar"] for r in rows] == ["no", "yes", "", ""]
    assert rows[1]["out of distribution"] == "no" and rows[1][REASON].startswith("unlike this model's training")
    assert rows[0][REASON] == "" and rows[2][REASON] == "far away"
    assert table_row({**_chest(0.5, "NORMAL"), "ood": None, "unfamiliar": None})["unfamiliar"] == "not checked"
    captions = [gallery_caption(f["file"], f) for f in _files()[:3]]
    assert captions[1] == "CR_RG1_J2KI.dcm: NORMAL (P(PNEUMONIA) = 65.0%) · unfamiliar"
    assert "unfamiliar" not in captions[0] and captions[2] == "brain_yes_y0.jpg: out of distribution (not a finding)"


def test_the_table_names_the_classes_in_the_cards_plain_words():
    """Walk-through: the brain model's headline read "tumour" but its table columns read P(no) and P(yes)."""
    brain = {"label": "yes", "probabilities": {"no": 0.1, "yes": 0.9}, "threshold": 0.75, "positive_class": "yes",
             "ood": False, "unfamiliar": False, "class_labels": {"no": "no tumour", "yes": "tumour"}}
    row = results_table([{"file": "a.png", **brain}])[0]
    assert row["decision"] == "tumour" and row["P(no tumour)"] == "10.0%" and row["P(tumour)"] == "90.0%"
    assert "P(yes)" not in row and "P(no)" not in row
    plain = table_row({**brain, "class_labels": None})
    assert plain["P(yes)"] == "90.0%" and plain["decision"] == "yes"


def test_the_feature_score_caption_needs_a_gate_and_a_score():
    from medclf_core.trust.ood import OODGate

    gate = OODGate(np.zeros((1, 1)), np.zeros(1), np.zeros((1, 0)), np.zeros(0), 1.0, threshold=118.14,
                   near_threshold=67.51, rule="unfamiliar: 99th percentile | refuse: 1.75 x (67.51)")
    refused = {**_chest(0.956, "PNEUMONIA"), "ood": True, "ood_score": 254.6}
    assert feature_score_caption(refused, gate) == ("Feature score 255; unfamiliar above 67.5 (99th percentile), "
                                                    "refused above 118 (1.75 x that).")
    assert feature_score_caption(refused, None) is None and feature_score_caption(_chest(0.5, "NORMAL"), gate) is None


def test_the_exports_say_whether_a_decision_is_borderline():
    assert [exported(f).get("borderline") for f in _files()] == [True, False, None, None]
    assert "borderline" not in exported(_files()[3])  # a file not read has no result


def test_the_headline_names_a_sites_threshold():
    """A result made with a site's calibration is decided at the site's threshold, and says so."""
    from medclf_core.inference.results import headline

    r = {"label": "PNEUMONIA", "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8}, "threshold": 0.639,
         "positive_class": "PNEUMONIA"}
    assert headline({**r, "calibration": "site:wardA"}).sentence.startswith(
        "Decision at the threshold of site 'wardA':")
    assert headline({**r, "calibration": "card"}).sentence.startswith("Decision at the model's operating threshold:")
    assert headline(r).sentence.startswith("Decision at the model's operating threshold:")
