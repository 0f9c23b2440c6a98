"""medclf_core.inference.sites: recalibrate on a folder (weights and card untouched), a Predictor with and
without a site (probabilities, threshold, the ``calibration`` field, result keys), and ``with_site``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import CHEST_SAMPLE

from medclf_core.errors import ModelError
from medclf_core.inference.folder import evaluate_folder
from medclf_core.inference.predictor import Predictor
from medclf_core.inference.results import result_key
from medclf_core.inference.sites import adopt_site, raw_probabilities, recalibrate
from medclf_core.trust.calibration import apply_temperature
from medclf_core.trust.sites import list_sites, load_site


@pytest.fixture(scope="module")
def site_run(refitted, tmp_path_factory):
    """A copy of the refitted tiny run (gate and temperature) with site 'north' fitted on the chest sample."""
    run = tmp_path_factory.mktemp("sites") / "tiny-site"
    shutil.copytree(refitted[0], run)
    before = {f: (run / f).read_bytes() for f in ("card.json", "model.keras")}
    refused = recalibrate(Predictor.from_run(run), CHEST_SAMPLE, "north", bootstrap=100)
    assert "path" not in refused and list_sites(run) == []  # the model's own training images: not without force
    rec = recalibrate(Predictor.from_run(run), CHEST_SAMPLE, "north", bootstrap=100, force=True)
    rec["refused"] = refused
    return run, rec, before


def test_recalibrating_on_the_training_images_warns_and_saves_only_when_forced(site_run):
    """The tiny run was trained on the chest sample: recalibrating on it says so (as ``evaluate`` does), and the
    record is not saved without ``force`` (it was saved silently, its 'before' figures flattered by the overlap)."""
    run, rec, _ = site_run
    refused = rec["refused"]
    kinds = {w["kind"]: w for w in refused["warnings"]}
    assert kinds["training_images"]["confirm"] and "trained or tuned on" in kinds["training_images"]["text"]
    assert "--force" in refused["not_saved"] and refused["temperature"] == rec["temperature"]  # nothing lost
    assert load_site(run, "north")["warnings"] == rec["warnings"]  # kept in the record saved with force


def test_recalibrate_writes_the_site_and_touches_nothing_else(site_run):
    run, rec, before = site_run
    assert rec["path"] == str(run / "sites" / "north.json") and list_sites(run) == ["north"]
    for f, data in before.items():
        assert (run / f).read_bytes() == data, f
    saved = load_site(run, "north")
    assert saved["n"] == 80 and saved["n_per_class"] == {"NORMAL": 40, "PNEUMONIA": 40}
    assert len(saved["fingerprint"]) == 64 and saved["dataset"] == CHEST_SAMPLE.name
    assert saved["temperature"] >= 1.0 and 0.0 <= saved["threshold"] <= 1.0
    assert saved["before"]["n"] == saved["after"]["n"] == 80
    assert saved["before"]["temperature"] == Predictor.from_run(run).temperature


def test_predictor_with_a_site_uses_its_temperature_and_threshold(site_run, sample_images):
    run, rec, _ = site_run
    card_p, site_p = Predictor.from_run(run), Predictor.from_run(run, site="north")
    assert site_p.temperature == rec["temperature"] and site_p.threshold == rec["threshold"]
    assert card_p.threshold == card_p.card["threshold"]
    card_probs = np.array([list(r["probabilities"].values()) for r in card_p.predict_files(sample_images[:4])])
    raw = raw_probabilities(card_p, card_probs)
    site_res = site_p.predict_files(sample_images[:4])
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in site_res],
                               apply_temperature(raw, rec["temperature"], positive=1), atol=1e-6)
    for r in site_res:
        assert r["calibration"] == "site:north" and r["threshold"] == rec["threshold"]
        assert r["temperature"] == rec["temperature"]
        assert r["label"] == ("PNEUMONIA" if r["probabilities"]["PNEUMONIA"] >= rec["threshold"] else "NORMAL")
    assert all("calibration" not in r for r in card_p.predict_files(sample_images[:4]))


def test_without_a_site_nothing_changes(site_run, refitted, sample_images):
    """A run that has sites predicts and evaluates exactly as the same run without any."""
    run, _, _ = site_run
    plain, with_sites = Predictor.from_run(refitted[0]), Predictor.from_run(run)
    strip = [{k: v for k, v in r.items() if k != "file"} for r in plain.predict_files(sample_images)]
    assert strip == [{k: v for k, v in r.items() if k != "file"} for r in with_sites.predict_files(sample_images)]
    a = evaluate_folder(plain, CHEST_SAMPLE, bootstrap=50)
    b = evaluate_folder(with_sites, CHEST_SAMPLE, bootstrap=50)
    a.pop("model"), b.pop("model")
    assert a == b and "calibration" not in b
    c = evaluate_folder(with_sites.with_site("north"), CHEST_SAMPLE, bootstrap=50)
    assert c["calibration"] == "site:north" and c["threshold"] == load_site(run, "north")["threshold"]
    assert "site_message" not in b["overlap"]
    assert c["overlap"]["site_message"].startswith("These are the images site 'north' was calibrated on")


def test_evaluating_a_site_on_other_images_gives_no_fitting_warning(site_run, tmp_path):
    """Only the very images the site was fitted on are flagged: a subset is another dataset."""
    import shutil

    run, _, _ = site_run
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / cls).mkdir()
        for f in sorted((CHEST_SAMPLE / cls).iterdir())[:6]:
            shutil.copy(f, tmp_path / cls / f.name)
    other = evaluate_folder(Predictor.from_run(run, site="north"), tmp_path, bootstrap=0)
    assert other["calibration"] == "site:north" and other["overlap"]["site_message"] is None


def test_with_site_shares_the_model_and_keys_results_apart(site_run):
    run, _, _ = site_run
    p = Predictor.from_run(run)
    s = p.with_site("north")
    assert s.model is p.model and s._forward is p._forward and p.site is None
    assert result_key(s.card, "abc") != result_key(p.card, "abc")
    back = s.with_site(None)
    assert back.site is None and back.temperature == p.temperature and back.threshold == p.threshold
    assert result_key(back.card, "abc") == result_key(p.card, "abc") and "site_calibration" not in back.card
    with pytest.raises(ModelError, match="known sites: north"):
        p.with_site("south")
    with pytest.raises(ModelError, match="known sites: north"):
        Predictor.from_run(run, site="south")


def test_with_site_takes_a_record_already_read_without_reading_it_again(site_run, monkeypatch):
    """The app reads a site's file once for the card in use and the predictor: a record passed in is used as
    it is (the file is not opened), and gives the same calibration as the site read by name."""
    from medclf_core.inference import sites

    run, _, _ = site_run
    p = Predictor.from_run(run)
    record = {**load_site(run, "north"), "threshold": 0.25}
    by_name = p.with_site("north")
    monkeypatch.setattr(sites, "load_site", lambda *a, **k: pytest.fail("the site file was read again"))
    given = sites.with_site(p, "north", record)
    assert given.site is record and given.threshold == 0.25 != by_name.threshold
    assert given.temperature == by_name.temperature and given.card["site_calibration"]["site"] == "north"


def test_adopt_from_predictions_already_made(site_run, tmp_path):
    """The Evaluate page's path: the predictions of an evaluation, fitted without running the model again."""
    run, rec, _ = site_run
    p = Predictor.from_run(run)
    ev = evaluate_folder(p, CHEST_SAMPLE, bootstrap=0, with_predictions=True)
    again = adopt_site(p, ev["predictions"], "north", dataset="x", fingerprint=None, bootstrap=100, save=False)
    assert again["temperature"] == pytest.approx(rec["temperature"]) and again["threshold"] == pytest.approx(
        rec["threshold"])
    assert "path" not in again and "not_saved" not in again  # not asked to save: nothing refused
    assert "training_images" in {w["kind"] for w in again["warnings"]}  # the page's panel shows the same warning
    with pytest.raises(ModelError, match="site name"):
        adopt_site(p, ev["predictions"], "../x", dataset="x", fingerprint=None)
