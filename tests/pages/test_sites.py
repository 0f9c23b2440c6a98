"""Site calibrations in the app: the sidebar's calibration picker (only for a model that has sites, the card's
by default) and the Predict page's one line saying which calibration its results use."""

from __future__ import annotations

import numpy as np
from helpers import REPO, SAMPLES

from medclf_core.trust.sites import save_site, site_calibration

JPEG = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[0]


def _add_site(run, name="north"):
    """A valid site record for ``run`` (fitted on synthetic probabilities: the page only reads it)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    p1 = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.2, 40), 0.01, 0.99)
    rec = site_calibration(name, y, np.c_[1 - p1, p1], {"name": run.name, "class_names": ["NORMAL", "PNEUMONIA"],
                                                        "threshold": 0.5}, bootstrap=0)
    save_site(run, rec)
    return rec


def _first_run(**state):
    """streamlit_app.py's first run with this session state (AppTest draws the sidebar on the first run only:
    later runs run the page alone, as a fresh server does for a page's URL)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_sidebar_offers_a_site_picker_only_for_a_model_with_sites(own_models):
    _add_site(own_models / "tiny-a")
    assert "site_name" not in [s.key for s in _first_run(model_name="tiny-b").sidebar.selectbox]
    picker = _first_run(model_name="tiny-a").sidebar.selectbox(key="site_name")
    assert picker.value is None and picker.options == ["Card calibration", "Site: north"]  # the card's by default
    kept = _first_run(model_name="tiny-a", site_model="tiny-a", site_name="north")
    assert kept.sidebar.selectbox(key="site_name").value == "north"
    other = _first_run(model_name="tiny-b", site_model="tiny-a", site_name="north")  # another model: its card
    assert other.session_state["site_name"] is None


def test_the_predict_page_says_which_calibration_it_uses(own_models, page):
    rec = _add_site(own_models / "tiny-a")
    at = page("predict")
    at.session_state["model_name"] = "tiny-a"
    at.session_state["site_model"], at.session_state["site_name"] = "tiny-a", "north"
    at.run()
    at.file_uploader(key="predict_upload").set_value((JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "north" in captions, captions
    assert f"{rec['threshold']:.3f}"[:4] in captions
    at.session_state["site_name"] = None
    at.run()
    captions = " ".join(c.value for c in at.caption)
    assert "north" not in captions


def test_the_evaluate_page_adopts_an_uploaded_evaluation_as_a_site(own_models, page):
    """After an evaluation by upload: fit and check (before/after shown), then save beside the model."""
    import io
    import zipfile

    from helpers import CHEST_SAMPLE

    from medclf_core.trust.sites import list_sites, load_site

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("NORMAL", "PNEUMONIA"):
            for f in sorted((CHEST_SAMPLE / cls).iterdir())[:10]:
                zf.write(f, f"{cls}/{f.name}")
    at = page("evaluate")
    at.session_state["model_name"] = "tiny-a"
    at.run()
    at.radio(key="eval_source").set_value("upload")
    at.run()
    at.file_uploader(key="eval_zip").set_value(("site.zip", buf.getvalue(), "application/zip"))
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    at.text_input(key="adopt_site_name").set_value("north")
    at.run()
    at.button(key="adopt_site_fit").click()
    at.run()
    assert not at.exception and not at.error
    texts = [t.value for t in at.text]
    assert any(t.startswith("Before (card calibration): ECE") and "n = 20" in t for t in texts), texts
    assert any(t.startswith("After (site, cross-fitted): ECE") for t in texts), texts
    assert list_sites(own_models / "tiny-a") == []  # nothing saved until asked
    warnings = " ".join(w.value for w in at.warning)  # shown before the Save button, in plain words
    assert "Only 10 images of PNEUMONIA" in warnings and "images this model was trained or tuned on" in warnings
    assert at.button(key="adopt_site_save").disabled  # a warning that needs a decision: not saved by one click
    at.checkbox(key="adopt_site_force").check()
    at.run()
    assert not at.button(key="adopt_site_save").disabled
    at.button(key="adopt_site_save").click()
    at.run()
    assert not at.exception and list_sites(own_models / "tiny-a") == ["north"]
    assert load_site(own_models / "tiny-a", "north")["n"] == 20
    # said after the rerun that puts the site in the sidebar's list (session 21: said before, with no list there)
    assert any(m.value.startswith("Saved ") and "sidebar's Calibration list" in m.value for m in at.success)
    assert load_site(own_models / "tiny-a", "north")["dataset"] == "upload"
    at.session_state["_eval_staged"].remove()


def test_a_server_folder_can_be_adopted_as_a_site_too(own_models, page):
    """Walk-through, session 21: only an upload offered "adopt as this site's calibration"."""
    from helpers import CHEST_SAMPLE, server_folder

    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    assert not at.exception and not at.error
    assert "Adopt as this site's calibration" in [e.label for e in at.expander]
    at.radio(key="eval_source").set_value("own")
    at.run()
    assert "Adopt as this site's calibration" not in [e.label for e in at.expander]  # its own test split: no site


def test_the_evaluate_page_uses_the_site_picked_in_the_sidebar(own_models, page):
    """With a site picked, the Evaluate page's threshold and calibration are the site's (and it says so); with
    none, the card's."""
    from medclf_core.io.atomic import read_json

    rec = _add_site(own_models / "tiny-a")
    card = read_json(own_models / "tiny-a", "card.json")
    at = page("evaluate")
    at.session_state["model_name"] = "tiny-a"
    at.session_state["site_model"], at.session_state["site_name"] = "tiny-a", "north"
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "Calibration in use: site 'north'" in captions, captions
    assert at.slider[0].value == round(rec["threshold"], 3) != round(card["threshold"], 3)
    at.session_state["site_name"] = None
    at.run()
    captions = " ".join(c.value for c in at.caption)
    assert "site 'north'" not in captions and "Calibration in use:" in captions
    assert at.slider[0].value == round(card["threshold"], 3)


def test_the_evaluate_page_reads_the_site_calibration_once_per_version_of_its_file(own_models, page, monkeypatch):
    """The site's JSON is read once for the card in use and the predictor (heat maps) together, not once each,
    and read again only when the file changes (a site adopted again is not shown stale)."""
    from medclf_core.trust import sites

    reads = []
    real = sites.read_json
    monkeypatch.setattr(sites, "read_json", lambda folder, name, *a: reads.append(name) or real(folder, name, *a))
    rec = _add_site(own_models / "tiny-a")
    at = page("evaluate")
    at.session_state["model_name"] = "tiny-a"
    at.session_state["site_model"], at.session_state["site_name"] = "tiny-a", "north"
    at.run()
    assert not at.exception, at.exception
    assert at.get("image"), "no heat maps drawn: the predictor with the site was not used"
    assert reads.count("north.json") == 1
    at.run()
    assert reads.count("north.json") == 1  # the same file: not read again
    save_site(own_models / "tiny-a", {**rec, "threshold": 0.123})  # adopted again: a new version of the file
    at.run()
    assert reads.count("north.json") == 2 and at.slider[0].value == 0.123


def test_the_evaluate_page_opens_every_source_with_a_site_picked(own_models, page):
    """With a site picked, the card in use is still a ModelCard (``card.class_names``): the upload and the PACS
    sources, which read it before anything is evaluated, open without an error (they crashed: site_card gave a
    plain dict)."""
    _add_site(own_models / "tiny-a")
    at = page("evaluate")
    at.session_state["model_name"] = "tiny-a"
    at.session_state["site_model"], at.session_state["site_name"] = "tiny-a", "north"
    at.run()
    for source, mode in (("upload", "zip"), ("upload", "images"), ("pacs", None)):
        at.radio(key="eval_source").set_value(source)
        if mode:
            at.run()
            at.radio(key="eval_upload_mode").set_value(mode)
        at.run()
        assert not at.exception, (source, mode, at.exception)


def test_the_models_page_lists_a_models_site_calibrations_with_their_check(own_models, page):
    """Walk-through, session 21: the sidebar read "Site: north" while the Models page showed no site at all."""
    rec = _add_site(own_models / "tiny-a")
    at = page("models")
    at.session_state["models_selected"] = "tiny-a"
    at.run()
    assert not at.exception, at.exception
    sites = next(d.value for d in at.dataframe if "check" in d.value.columns)
    assert list(sites["site"]) == ["north"] and list(sites["images"]) == [rec["n"]]
    assert sites["check"][0].startswith("checked on held-back halves: sensitivity")
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    assert not [d for d in at.dataframe if "check" in d.value.columns]
    assert any(c.value.startswith("None: `medclf recalibrate") for c in at.caption)
