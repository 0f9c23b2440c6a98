"""medclf_core.trust.site_checks: the plain warnings about a site calibration before it is saved (the walk-through's
wardB fit lost sensitivity and was saved without a word)."""

from __future__ import annotations

from medclf_core.trust.site_checks import needs_confirmation, positives_needed, site_warnings

WARDB = {"n_per_class": {"NORMAL": 15, "PNEUMONIA": 15}, "positive_class": "PNEUMONIA",
         "target": {"metric": "sensitivity", "value": 0.95},
         "cross_fit": [{"temperature": 1.0, "threshold": 0.746}, {"temperature": 1.0, "threshold": 0.9998}],
         "before": {"n": 30, "ece": 0.08, "accuracy": 0.9, "sensitivity": 0.933, "n_positive": 15},
         "after": {"n": 30, "ece": 0.09, "accuracy": 0.867, "sensitivity": 0.733, "n_positive": 15,
                   "ci95": {"sensitivity": [0.5, 0.938]}}}


def test_the_walk_through_fit_gets_every_warning_and_needs_confirmation():
    w = {x["kind"]: x for x in site_warnings(WARDB)}
    assert list(w) == ["misses_target", "worse", "halves_disagree", "few_positives"]
    assert "0.733 (95% CI 0.500-0.938)" in w["misses_target"]["text"] and "0.95" in w["misses_target"]["text"]
    assert "sensitivity 0.933 with the card's, 0.733 with the site's" in w["worse"]["text"]
    assert "0.746" in w["halves_disagree"]["text"] and "1.000" in w["halves_disagree"]["text"]
    assert "Only 15 images of PNEUMONIA" in w["few_positives"]["text"] and "20" in w["few_positives"]["text"]
    assert w["misses_target"]["confirm"] and w["worse"]["confirm"]
    assert not w["halves_disagree"]["confirm"] and not w["few_positives"]["confirm"]
    assert needs_confirmation(list(w.values()))


def test_a_sound_fit_has_no_warning():
    good = {**WARDB, "n_per_class": {"NORMAL": 40, "PNEUMONIA": 40},
            "cross_fit": [{"threshold": 0.30}, {"threshold": 0.35}],
            "after": {"n": 80, "ece": 0.05, "sensitivity": 0.975, "n_positive": 40},
            "before": {"n": 80, "ece": 0.06, "sensitivity": 0.95, "n_positive": 40}}
    assert site_warnings(good) == [] and not needs_confirmation([])


def test_only_the_few_positives_warning_is_informative():
    few = {**WARDB, "cross_fit": [{"threshold": 0.30}, {"threshold": 0.35}],
           "after": {**WARDB["after"], "sensitivity": 1.0}}
    w = site_warnings(few)
    assert [x["kind"] for x in w] == ["few_positives"] and not needs_confirmation(w)
    assert positives_needed(0.95) == 20 and positives_needed(0.9) == 10


def test_a_worse_ece_beyond_the_margin_and_training_images_need_confirmation():
    rec = {**WARDB, "target": None, "after": {"n": 30, "ece": 0.20}, "before": {"n": 30, "ece": 0.05},
           "cross_fit": [{"threshold": None}, {"threshold": None}]}
    overlap = {"message": "71 of the 80 evaluated images are identical (same pixels) to images this model was "
                          "trained or tuned on"}
    w = {x["kind"]: x for x in site_warnings(rec, overlap)}
    assert list(w) == ["worse", "training_images"] and all(x["confirm"] for x in w.values())
    assert "ECE 0.050 with the card's, 0.200 with the site's" in w["worse"]["text"]
    assert w["training_images"]["text"].startswith("71 of the 80 evaluated images are identical")
    assert site_warnings(rec, {"message": None}) == site_warnings(rec)[:1]
