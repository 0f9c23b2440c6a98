"""medclf_core.trust.sites: the site fit (temperature bound, threshold for a target sensitivity), the stratified
halves and the cross-fit, the record's before/after, and the record on disk (save, list, load, bad names)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.trust.calibration import apply_temperature, expected_calibration_error
from medclf_core.trust.metrics import decide
from medclf_core.trust.sites import (
    SITES_DIR,
    apply_site,
    calibration_label,
    cross_fit,
    fit_site,
    halves,
    list_sites,
    load_site,
    metric_texts,
    save_site,
    site_calibration,
)

CARD = {"name": "m", "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA", "threshold": 0.5,
        "calibration": {"temperature": 1.0}}


def _overconfident(n_per_class=60, seed=0, flip=0.15):
    """Binary probabilities that are near 0/1 but wrong on ``flip`` of the images: a model over-confident here."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    said = np.where(rng.random(len(y)) < flip, 1 - y, y)
    p1 = np.where(said == 1, rng.uniform(0.97, 0.999, len(y)), rng.uniform(0.001, 0.03, len(y)))
    return y, np.c_[1 - p1, p1]


def test_fit_softens_an_overconfident_model_and_keeps_the_target_sensitivity():
    y, raw = _overconfident()
    fit = fit_site(y, raw, 1, target_sensitivity=0.95)
    assert fit["temperature"] > 1.5
    cal = apply_temperature(raw, fit["temperature"], positive=1)
    assert expected_calibration_error(y, cal) < expected_calibration_error(y, raw)
    pred = decide(cal, fit["threshold"], 1)
    assert np.mean(pred[y == 1] == 1) >= 0.95


def test_temperature_bound_never_sharpens_unless_asked():
    """On images the model nearly separates, the free NLL fit sharpens (T < 1); the site default keeps T = 1."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 50)
    p1 = np.where(y == 1, rng.uniform(0.6, 0.8, 100), rng.uniform(0.2, 0.4, 100))
    raw = np.c_[1 - p1, p1]
    assert fit_site(y, raw, 1)["temperature"] == 1.0
    assert fit_site(y, raw, 1, min_temperature=0.05)["temperature"] < 1.0


def test_halves_are_stratified_and_disjoint():
    y = np.array([0] * 11 + [1] * 30 + [2] * 4)
    h = halves(y, seed=3)
    for c, n in ((0, 11), (1, 30), (2, 4)):
        assert abs(int(np.sum(h[y == c] == 0)) - int(np.sum(h[y == c] == 1))) <= 1, (c, n)
    np.testing.assert_array_equal(h, halves(y, seed=3))  # the same seed draws the same halves


def test_cross_fit_judges_each_half_with_the_other_halfs_fit():
    y, raw = _overconfident(seed=2)
    out = cross_fit(y, raw, 1, seed=0)
    for h in (0, 1):
        fit = fit_site(y[out["half"] == h], raw[out["half"] == h], 1)
        assert fit == out["fits"][h]
        other = out["half"] != h
        np.testing.assert_allclose(out["probs"][other], apply_temperature(raw[other], fit["temperature"], positive=1))
        np.testing.assert_array_equal(out["y_pred"][other], decide(out["probs"][other], fit["threshold"], 1))


def test_record_has_before_with_the_cards_calibration_and_after_cross_fitted():
    y, raw = _overconfident(seed=3)
    card = {**CARD, "calibration": {"temperature": 0.8}, "threshold": 0.7}
    rec = site_calibration("north", y, raw, card, bootstrap=50, dataset="d", fingerprint="f" * 64)
    before_p = apply_temperature(raw, 0.8, positive=1)
    assert rec["before"]["accuracy"] == pytest.approx(np.mean(decide(before_p, 0.7, 1) == y))
    assert rec["before"]["ece"] == pytest.approx(expected_calibration_error(y, before_p))
    assert rec["before"]["temperature"] == 0.8 and rec["before"]["threshold"] == 0.7
    held = cross_fit(y, raw, 1)
    assert rec["after"]["accuracy"] == pytest.approx(np.mean(held["y_pred"] == y))
    assert rec["after"]["ece"] < rec["before"]["ece"]
    assert rec["after"]["n"] == 120 and rec["after"]["n_positive"] == 60 and rec["after"]["n_negative"] == 60
    for key in ("accuracy", "ece", "sensitivity", "specificity"):
        lo, hi = rec["after"]["ci95"][key]
        assert lo <= rec["after"][key] <= hi
    assert rec["n_per_class"] == {"NORMAL": 60, "PNEUMONIA": 60} and rec["fingerprint"] == "f" * 64
    assert rec["target"] == {"metric": "sensitivity", "value": 0.95} and rec["after"]["calibration"] == "site:north"
    texts = metric_texts(rec["after"])
    assert texts[0].startswith("ECE ") and "n = 120" in texts[0] and "n = 60" in texts[2]


def test_multiclass_gets_a_temperature_only():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 20)
    raw = np.full((60, 3), 0.01)
    raw[np.arange(60), np.where(rng.random(60) < 0.3, (y + 1) % 3, y)] = 0.98
    rec = site_calibration("east", y, raw, {"name": "m3", "class_names": ["a", "b", "c"]}, bootstrap=0)
    assert rec["threshold"] is None and rec["target"] is None and rec["temperature"] > 1.0
    assert "sensitivity" not in rec["after"]


def test_too_few_images_or_one_class_is_a_plain_error():
    y, raw = _overconfident(n_per_class=5)
    with pytest.raises(ModelError, match="at least 8"):
        site_calibration("s", y, raw, CARD)
    y, raw = _overconfident(n_per_class=20)
    with pytest.raises(ModelError, match="at least"):
        site_calibration("s", y[y == 1], raw[y == 1], CARD)


def test_save_list_load_and_apply(tmp_path):
    y, raw = _overconfident(seed=5)
    rec = site_calibration("north", y, raw, CARD, bootstrap=0)
    path = save_site(tmp_path, rec)
    assert path == tmp_path / SITES_DIR / "north.json"
    assert [p.name for p in path.parent.iterdir()] == ["north.json"]  # written atomically: no temporary left
    save_site(tmp_path, {**rec, "site": "b-site"})
    (tmp_path / SITES_DIR / "broken.json").write_text("{not json")
    (tmp_path / SITES_DIR / "wrongname.json").write_text(json.dumps({**rec, "site": "other"}))
    assert list_sites(tmp_path) == ["b-site", "north"]
    loaded = load_site(tmp_path, "north")
    assert loaded["temperature"] == rec["temperature"] and loaded["threshold"] == rec["threshold"]
    np.testing.assert_allclose(apply_site(raw, loaded, 1), apply_temperature(raw, rec["temperature"], positive=1))
    assert calibration_label(loaded) == "site:north" and calibration_label(None) == "card"
    with pytest.raises(ModelError, match="known sites: b-site, north"):
        load_site(tmp_path, "south", model="m")
    with pytest.raises(ModelError, match="known sites: b-site, north"):
        load_site(tmp_path, "broken")
    assert list_sites(tmp_path / "nowhere") == [] and list_sites(None) == []


@pytest.mark.parametrize("name", ["../up", "a/b", ".x", ""])
def test_a_bad_site_name_never_reaches_the_disk(tmp_path, name):
    y, raw = _overconfident(seed=6)
    with pytest.raises(ModelError, match="site name"):
        site_calibration(name, y, raw, CARD, bootstrap=0)
    rec = site_calibration("ok", y, raw, CARD, bootstrap=0)
    with pytest.raises(ModelError, match="site name"):
        save_site(tmp_path, {**rec, "site": name})
    with pytest.raises(ModelError, match="site name"):
        load_site(tmp_path, name)
    assert not (tmp_path / SITES_DIR).exists() or not any((tmp_path / SITES_DIR).iterdir())


def test_the_site_threshold_leaves_room_below_the_plain_rule():
    """The bootstrap-percentile threshold is never above the plain "highest threshold that reaches the target",
    and on noisy scores it is lower (so new positives near the lowest fitted ones are still caught)."""
    from medclf_core.trust.metrics import choose_threshold
    from medclf_core.trust.sites import conservative_threshold

    rng = np.random.default_rng(7)
    y = np.repeat([0, 1], 50)
    p1 = 1 / (1 + np.exp(-(np.where(y == 1, 1.5, -1.5) + rng.normal(0, 1.2, 100))))
    probs = np.c_[1 - p1, p1]
    plain = choose_threshold(y, probs, 1, "sensitivity", target_sensitivity=0.95)
    low = conservative_threshold(y, probs, 1, 0.95)
    assert low < plain
    assert np.mean(p1[y == 1] >= low) >= 0.95


def test_site_card_reads_as_the_site_and_keeps_the_stored_temperature():
    from medclf_core.trust.calibration import calibration_in_use, stored_probabilities
    from medclf_core.trust.sites import site_card

    card = {"name": "m", "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA", "threshold": 0.7,
            "calibration": {"temperature": 0.5, "stored_predictions": "calibrated"}}
    rec = {"site": "north", "temperature": 2.0, "threshold": 0.3, "date": "2026-12-06",
           "rule": {"threshold": "sensitivity >= 0.95"}}
    c = site_card(card, rec)
    assert c["threshold"] == 0.3 and card["threshold"] == 0.7 and card["calibration"]["temperature"] == 0.5
    assert calibration_in_use(c).startswith("site 'north'")
    stored = np.array([[0.2, 0.8]])  # stored at T = 0.5: the card's own output
    np.testing.assert_allclose(stored_probabilities(card, stored), stored)
    raw = stored_probabilities({**card, "calibration": {"temperature": 1.0, "stored_predictions": "calibrated",
                                                        "stored_temperature": 0.5}}, stored)
    np.testing.assert_allclose(stored_probabilities(c, stored), stored_probabilities(
        {**card, "calibration": {"temperature": 2.0}}, raw))  # the site's T on the raw probabilities
    multi = site_card({**card, "class_names": ["a", "b", "c"]}, rec)
    assert multi["threshold"] == 0.7 and multi["calibration"]["temperature"] == 2.0  # argmax decides: no threshold


def test_site_card_of_a_model_card_is_a_model_card():
    """The pages read ``card.class_names`` of the card in use: a ModelCard in gives a ModelCard out (it gave a plain
    dict, and the Evaluate page crashed whenever a site was picked); the original is not changed."""
    from medclf_core.registry.card import ModelCard
    from medclf_core.trust.sites import site_card

    card = ModelCard.from_dict({"name": "m", "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.7,
                                "run_dir": "/runs/m"})
    c = site_card(card, {"site": "north", "temperature": 2.0, "threshold": 0.3})
    assert isinstance(c, ModelCard) and c.class_names == ["NORMAL", "PNEUMONIA"] and c.threshold == 0.3
    assert c.run_dir == "/runs/m" and card.threshold == 0.7 and card.calibration is None
    assert type(site_card(dict(card), {"site": "north", "temperature": 2.0, "threshold": 0.3})) is dict


def test_a_site_saved_over_its_warnings_says_so_wherever_its_calibration_is_named():
    """Walk-through, session 21: a site calibration whose check missed its target (sensitivity 0.733 on held-back
    halves, target 0.95) was saved with "Save anyway"; the Predict page then read "threshold 0.746 on P(PNEUMONIA)
    for sensitivity 0.95" and the PDF the rule, with no word of the check. Now the caption, the card's words for
    the calibration in use (PDF, SR) and the PDF's threshold line carry the checked figure and the warnings."""
    from medclf_core.trust.calibration import calibration_in_use
    from medclf_core.trust.site_checks import check_note
    from medclf_core.trust.sites import calibration_caption, site_card

    card = {"name": "m", "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA", "threshold": 0.77}
    rec = {"site": "st-marys", "temperature": 1.0, "threshold": 0.745583, "date": "2026-12-08", "n": 30,
           "positive_class": "PNEUMONIA", "target": {"metric": "sensitivity", "value": 0.95},
           "after": {"sensitivity": 0.7333, "n_positive": 15},
           "warnings": [{"kind": "misses_target", "confirm": True}, {"kind": "worse", "confirm": True},
                        {"kind": "few_positives", "confirm": False}]}
    note = check_note(rec)
    assert note == ("checked on held-back halves: sensitivity 0.733 (n = 15, target 0.95); saved over warnings: its "
                    "checked sensitivity misses the target; it did worse than the model card's calibration on the "
                    "site's images")
    assert calibration_caption(card, rec).endswith(f"not the model card's. Its own check: {note}.")
    assert calibration_in_use(site_card(card, rec)).endswith(f"not the model card's; {note}")
    clean = {**rec, "after": {"sensitivity": 0.96, "n_positive": 40}, "warnings": []}
    assert check_note(clean) == "checked on held-back halves: sensitivity 0.960 (n = 40, target 0.95)"
    assert check_note({"site": "old", "temperature": 1.0}) is None  # a record without a check: nothing made up
    assert calibration_in_use(site_card(card, {"site": "old", "temperature": 1.0, "threshold": 0.5})).endswith(
        "not the model card's")
