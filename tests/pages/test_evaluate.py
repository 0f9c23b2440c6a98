"""Evaluate page: metrics, confusion matrices, ROC, live threshold, misclassified images."""

from __future__ import annotations

import re

from helpers import CHEST_SAMPLE, rendered, server_folder


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_own_test_split_shows_confusion_matrix_roc_and_threshold(app_env, page):
    at = page("evaluate")
    at.run()
    assert not at.exception
    assert at.subheader[0].value.startswith("tiny-chest on ")
    metrics = at.dataframe[0].value
    assert "Accuracy" in list(metrics["metric"]) and metrics["95% interval"][0]
    assert _charts(at) == 6  # accuracy against coverage, counts, normalised, at the threshold, ROC, reliability
    assert any("stored test-split predictions carry no out-of-distribution flags" in i.value for i in at.info)
    assert any("Expected calibration error" in c.value for c in at.caption)
    sens = [m.value for m in at.metric]
    at.slider[0].set_value(0.0)
    at.run()
    assert not at.exception
    assert at.metric[0].value == "100.0%"  # every positive found at threshold 0
    assert at.metric[1].value == "0.0%" or sens[1] == "0.0%"  # and no negative is called negative
    assert at.subheader[-1].value == "Misclassified images"


def test_another_folder_and_a_bad_folder(app_env, page):
    at = server_folder(page, "evaluate", "/no/such/data")
    assert not at.exception and "cannot be evaluated" in at.error[0].value
    at.text_input(key="eval_folder").set_value(str(CHEST_SAMPLE))
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "tiny-chest on 80 images"
    downloads = [b.proto.label for b in at.get("download_button")]
    assert downloads == ["Download each image's result (CSV, without patient identifiers)"]
    # issue 24: the model was trained on this folder, and the page says so above the metrics
    assert any("evaluated images are identical" in rendered(w.value) and "overstate" in w.value for w in at.warning)
    assert _charts(at) == 6
    assert "Out-of-distribution check" in [h.value for h in at.subheader]
    assert at.subheader[-1].value == "Misclassified images"


def _with_colour_photos(root):
    """The chest sample plus two colour pictures filed as NORMAL: the colour check refuses them."""
    import numpy as np
    from PIL import Image

    for c in ("NORMAL", "PNEUMONIA"):
        (root / c).mkdir(parents=True)
        for f in (CHEST_SAMPLE / c).iterdir():
            (root / c / f.name).symlink_to(f)
    rng = np.random.default_rng(0)
    for i, rgb in enumerate([(200, 40, 40), (30, 160, 60)]):
        colour = np.clip(np.asarray(rgb) + rng.integers(-30, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(colour).save(root / "NORMAL" / f"photo{i}.png")
    return root


def test_a_refitted_model_shows_flagged_images_metrics_without_them_and_calibration(refitted_env, page, tmp_path):
    at = server_folder(page, "evaluate", _with_colour_photos(tmp_path / "mixed"))
    assert not at.exception and not at.error
    assert any("2 of 82 images refused" in m.value and "coverage" in m.value for m in at.markdown)
    side = [d.value for d in at.dataframe if "without the refused" in d.value.columns]
    assert side and {"all images", "without the refused"} <= set(side[0].columns)
    # walk-through, round two: with nothing refused, no second column that repeats the first
    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    assert any("0 of 80 images refused" in m.value for m in at.markdown)
    assert not [d for d in at.dataframe if "without the refused" in d.value.columns]
    assert any("Calibration in use: temperature scaling" in c.value and "T = " in c.value for c in at.caption)
    assert _charts(at) == 6
    # the own test split: calibrated stored predictions, no flags stored
    at.radio(key="eval_source").set_value("own")
    at.run()
    assert not at.exception
    assert any("carry no out-of-distribution flags" in i.value for i in at.info)


def test_accuracy_against_coverage_for_both_orderings(refitted_env, page):
    """Issue 24 item 4: what deferring 10% gains, in words and as a chart, for the ordering chosen."""
    import json

    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    assert not at.exception and "Deferring to a reader" in [h.value for h in at.subheader]
    assert at.radio(key="eval-defer").options == ["the least confident images", "the most unfamiliar images"]

    def shown(ordering: str) -> tuple[str, str]:
        chart = next(c for c in at.get("plotly_chart") if "Accuracy against coverage" in c.proto.spec)
        names = [t.get("name") for t in json.loads(chart.proto.spec)["data"]]
        words = next(c.value for c in at.caption if "Coverage is the share of all images" in c.value)
        assert f"deferring the {ordering}" in names and ordering in words and "of 80)" in words
        return names, words

    shown("least confident")
    at.radio(key="eval-defer").set_value("unfamiliar")
    at.run()
    assert not at.exception
    shown("most unfamiliar")


def test_an_older_model_says_not_checked_and_uncalibrated(older_env, page):
    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    assert not at.exception and not at.error
    assert any("no out-of-distribution gate" in i.value for i in at.info)
    assert any("Calibration in use: none: the model's own probabilities" in c.value and "uncalibrated" in c.value
               for c in at.caption)


def test_a_class_folder_named_like_markdown_is_shown_as_text(app_env, page, tmp_path):
    """Issue 17: a folder name must never become a link or an image in every visitor's browser."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(CHEST_SAMPLE / "NORMAL", data / "NORMAL")
    shutil.copytree(CHEST_SAMPLE / "PNEUMONIA", data / "![p](https:example.com)")
    at = server_folder(page, "evaluate", data)
    assert not at.exception
    shown = at.error[0].value
    assert "example" in shown and "](" not in shown and "![" not in shown  # escaped: no Markdown image


def test_the_misclassified_maps_can_be_checked_for_faithfulness(app_env, page):
    """On request (it costs ~38 predictions per map): a mean faithfulness and one score per map caption."""
    at = page("evaluate")
    at.run()
    assert not at.exception and at.subheader[-1].value == "Misclassified images"
    assert not any(c.value.startswith("Mean faithfulness") for c in at.caption)   # not computed unasked
    # issue 24: a mistake's caption gives P(positive class) with the decision, capped, never the decided class's own
    captions = [rendered(c) for im in at.image for c in im.captions if ", predicted " in c]
    assert captions and all(" (P(PNEUMONIA) " in c for c in captions), captions
    at.button(key="eval-faithfulness").click()
    at.run()
    assert not at.exception
    mean = [c for c in at.caption if c.value.startswith("Mean faithfulness")]
    assert len(mean) == 1 and "random" in mean[0].proto.help
    at.run()
    assert not [b for b in at.button if b.key == "eval-faithfulness"]           # done: the button is gone
    assert len([c for c in at.caption if c.value.startswith("Mean faithfulness")]) == 1   # cached


# ---------------------------------------------------------------------------- issue 16

def _zip_of(images: dict[str, list], prefix: str = "") -> bytes:
    """A dataset zip in memory: ``{"test/NORMAL": [path, ...]}`` -> ``<prefix><folder>/<file>`` members."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for folder, files in images.items():
            for f in files:
                zf.write(f, f"{prefix}{folder}/{f.name}")
    return buf.getvalue()


def _sample(cls: str, n: int):
    return sorted((CHEST_SAMPLE / cls).iterdir())[:n]


def _staged_folders() -> set[str]:
    import os
    import tempfile

    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(f"medclf-zip-{os.getpid()}-upload-")}


def test_the_model_is_the_one_chosen_in_the_sidebar(own_models, page):
    """Issue 16: one source of truth: the sidebar's picker (session_state 'model_name') drives Evaluate."""
    at = page("evaluate")
    at.session_state["model_name"] = "tiny-b"
    at.run()
    assert not at.exception
    assert not [s for s in at.selectbox if s.label == "Model"]  # no second picker on the page
    assert at.subheader[0].value.startswith("tiny-b on ")
    assert any("Model: **tiny-b**" in rendered(c.value) and "sidebar" in c.value for c in at.caption)
    at.session_state["model_name"] = "tiny-a"
    at.run()
    assert at.subheader[0].value.startswith("tiny-a on ")


def _upload_source(page):
    """The Evaluate page with "upload" chosen as the source."""
    at = page("evaluate")
    at.run()
    at.radio(key="eval_source").set_value("upload")
    at.run()
    return at


def test_an_uploaded_zip_gets_the_full_evaluation_with_progress_and_leaves_no_folder(app_env, page):
    """Issue 16: a zip from the browser (train|val|test layout) gives the block a server folder gives."""
    before = _staged_folders()
    at = _upload_source(page)
    assert at.button(key="eval_go").disabled  # nothing uploaded yet
    data = _zip_of({"test/NORMAL": _sample("NORMAL", 5), "test/PNEUMONIA": _sample("PNEUMONIA", 5),
                    "train/NORMAL": _sample("NORMAL", 2)[1:]}, prefix="hospital-b/")
    at.file_uploader(key="eval_zip").set_value(("hospital-b.zip", data, "application/zip"))
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "tiny-chest on 10 images"  # auto: the test folder
    assert at.get("progress")[0].proto.text == "10 of 10 files read and classified."
    assert _charts(at) == 6 and at.subheader[-1].value == "Misclassified images"
    first = at.session_state["_eval_staged"].folder
    assert first.is_dir() and len(_staged_folders() - before) == 1
    # another upload replaces it: the first folder is removed
    at.file_uploader(key="eval_zip").set_value(("b.zip", _zip_of({"NORMAL": _sample("NORMAL", 3),
                                                                  "PNEUMONIA": _sample("PNEUMONIA", 3)}),
                                                "application/zip"))
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and at.subheader[0].value == "tiny-chest on 6 images"
    assert not first.exists() and len(_staged_folders() - before) == 1
    at.session_state["_eval_staged"].remove()
    assert _staged_folders() == before


def test_uploaded_images_with_their_class(app_env, page):
    at = _upload_source(page)
    at.radio(key="eval_upload_mode").set_value("images")
    at.run()
    for i, cls in enumerate(["NORMAL", "PNEUMONIA"]):
        files = [(p.name, p.read_bytes(), "image/jpeg") for p in _sample(cls, 3)]
        at.file_uploader(key=f"eval_images_{i}").set_value(files + [("junk.png", b"not an image", "image/png")])
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "tiny-chest on 6 images"
    assert any("2 file(s) could not be read" in e.label for e in at.expander)
    at.session_state["_eval_staged"].remove()


def test_a_damaged_zip_is_a_plain_message_and_leaves_nothing(app_env, page):
    before = _staged_folders()
    at = _upload_source(page)
    at.file_uploader(key="eval_zip").set_value(("x.zip", b"PK\x03\x04 not really a zip", "application/zip"))
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and "cannot be evaluated" in at.error[0].value
    assert _staged_folders() == before


def test_a_test_only_folder_with_split_test_and_an_image_file(app_env, page, tmp_path, monkeypatch):
    """Issue 16: DATA/test/<class>/... is an evaluation set; an image file gets a plain, right message."""
    import shutil

    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))
    data = tmp_path / "hospital"
    for cls in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(CHEST_SAMPLE / cls, data / "test" / cls)
    at = server_folder(page, "evaluate", data, split="test")
    assert not at.exception and not at.error
    assert at.subheader[0].value == "tiny-chest on 80 images"
    image = next((data / "test" / "NORMAL").iterdir())
    at.text_input(key="eval_folder").set_value(str(image))
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception
    shown = rendered(at.error[0].value)
    assert "is a single file" in shown and "not found" not in shown


def _moved_dataset(models, source):
    import json

    for run in models.iterdir():
        card = json.loads((run / "card.json").read_text())
        card["dataset"]["source"] = source
        (run / "card.json").write_text(json.dumps(card))


def test_the_own_split_trained_on_another_machine_finds_this_checkouts_sample(own_models, page):
    """Issue 16: a fresh clone: the recorded root of the machine that trained is found here."""
    _moved_dataset(own_models, "/home/someone/medclf/samples/datasets/chest_xray")
    at = page("evaluate")
    at.run()
    assert not at.exception
    assert not any("on this server" in i.value for i in at.info)


def test_the_own_split_whose_images_are_elsewhere_says_so_plainly(own_models, page):
    _moved_dataset(own_models, "/elsewhere/chest_films")
    at = page("evaluate")
    at.run()
    assert not at.exception
    notes = [rendered(i.value) for i in at.info if "on this server" in i.value]
    assert len(notes) == 1 and notes[0].startswith("None of these images is on this server")
    assert "stored with the model" in notes[0] and "not here" in notes[0]
    # issue 26: the training machine's path means nothing here: no path anywhere on the page
    shown = " ".join(rendered(e.value) for e in [*at.info, *at.caption, *at.markdown])
    assert "elsewhere" not in shown and "chest_films" not in shown
    assert at.subheader[0].value.startswith("tiny-") and _charts(at) == 6


def test_a_folder_is_evaluated_by_the_core_once_and_drawn(app_env, page, monkeypatch):
    """Issue 22: the page calls inference.folder.evaluate_folder (with its progress callback) and draws its figures."""
    from medclf_core.inference import folder

    calls = []
    real = folder.evaluate_folder

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(folder, "evaluate_folder", counting)
    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    assert not at.exception and not at.error
    assert len(calls) == 1 and callable(calls[0]["progress"]) and calls[0]["with_predictions"]
    at.run()  # a rerun draws the kept result
    assert len(calls) == 1 and at.subheader[0].value == "tiny-chest on 80 images"


# ---------------------------------------------------------------------------- issue 26

def _threshold_title(at) -> str | None:
    """The threshold the 'Confusion matrix at threshold ...' figure was drawn at, as printed."""
    import json

    for chart in at.get("plotly_chart"):
        title = ((json.loads(chart.proto.spec).get("layout") or {}).get("title") or {}).get("text") or ""
        if title.startswith("Confusion matrix at threshold "):
            return title.rsplit(" ", 1)[1]
    return None


def test_a_new_evaluation_starts_at_the_operating_threshold_and_draws_at_the_sliders_value(app_env, page):
    """Issue 26: the slider showed 0.751 while the metrics, the matrix and the ROC marker used 0.451, a value left
    from an earlier evaluation. One threshold per evaluation: what the slider says is what is computed."""
    import json

    from medclf_core.formatting import percent
    from medclf_core.registry.card import positive_class_index
    from medclf_core.trust.metrics import evaluate_probabilities

    card = json.loads((app_env / "card.json").read_text())
    operating = round(float(card["threshold"]), 3)
    moved = 0.2 if abs(operating - 0.2) > 0.05 else 0.8
    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    assert not at.exception and at.slider[0].value == operating
    at.slider[0].set_value(moved)
    at.run()
    assert _threshold_title(at) == f"{moved:.3f}"
    for step in ("own split", "the folder again", "the own split again"):  # each one is another evaluation
        if step.startswith("the own split") or step == "own split":
            at.radio(key="eval_source").set_value("own")
        else:
            at.radio(key="eval_source").set_value("folder")
            at.run()
            at.text_input(key="eval_folder").set_value(str(CHEST_SAMPLE))
            at.button(key="eval_go").click()
        at.run()
        assert not at.exception, step
        assert at.slider[0].value == operating, step
        assert _threshold_title(at) == f"{operating:.3f}", step
        at.slider[0].set_value(moved)
        at.run()
        shown = at.slider[0].value
        assert _threshold_title(at) == f"{shown:.3f}", step
    # the figures are those at the slider's value (the own split's stored, calibrated predictions)
    from medclf_core.io.atomic import read_json
    from medclf_core.registry.store import read_card, stored_test_predictions
    from medclf_core.trust.calibration import stored_probabilities

    run = read_card(app_env)
    predictions = stored_test_predictions(run, read_json(app_env, "evaluation.json"))
    predictions = {**predictions, "probs": stored_probabilities(run, predictions["probs"])}
    tm = evaluate_probabilities(predictions["y_true"], predictions["probs"], predictions["class_names"],
                                threshold=moved, bootstrap=0,
                                positive=positive_class_index(card["class_names"], card.get("positive_class")))
    assert at.metric[0].value == percent(tm["sensitivity"]) and at.metric[1].value == percent(tm["specificity"])


# ---------------------------------------------------------------------------- the walk-through's upload (s18)

def test_an_upload_with_refused_and_unreadable_files_counts_them_and_lists_the_refused_apart(refitted_env, page,
                                                                                              tmp_path):
    """The same film as an MR DICOM (the card's intended use is CR/DX chest: refused) under both classes, so the
    model's raw output is wrong for exactly one of them, plus a file that is not an image. The page said
    "9 of 9 images read and classified", listed a refused image as an ordinary mistake with a prediction, and
    "deferring 10% (the 2 refused first, ...)" when one image was deferred."""
    import pydicom

    from pacs_dicom import chest_dicom

    film = _sample("PNEUMONIA", 1)[0]
    mr = []
    for cls in ("NORMAL", "PNEUMONIA"):
        path = tmp_path / f"mr_{cls.lower()}.dcm"
        chest_dicom(film, path)
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
        mr.append((path.name, path.read_bytes(), "application/dicom"))
    at = _upload_source(page)
    at.radio(key="eval_upload_mode").set_value("images")
    at.run()
    for i, cls in enumerate(["NORMAL", "PNEUMONIA"]):
        files = [(p.name, p.read_bytes(), "image/jpeg") for p in _sample(cls, 3)] + [mr[i]]
        at.file_uploader(key=f"eval_images_{i}").set_value(files + ([("junk.png", b"not an image", "image/png")]
                                                                    if i else []))
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    assert at.get("progress")[0].proto.text == "8 of 9 files read and classified; 1 could not be read (listed below)."
    assert at.subheader[0].value == "tiny-chest on 8 images"
    assert any(c.value == "9 files: 8 read and evaluated, 1 could not be read. 2 of the 8 were refused (no finding "
               "shown), 6 answered." for c in at.caption)
    # no refused image among the misclassified, with a prediction; both listed apart with the reason
    shown = [rendered(c) for im in at.image for c in im.captions] + [rendered(m.value) for m in at.markdown]
    assert not [c for c in shown if "mr_" in c and "predicted" in c], shown
    assert any("answered images" in c.value and ("misclassified" in c.value) for c in [*at.caption, *at.success])
    refused = next(d.value for d in at.dataframe if "reason" in d.value.columns and "true class" in d.value.columns)
    assert sorted(refused["file"]) == ["mr_normal.dcm", "mr_pneumonia.dcm"]
    assert all("MR" in r for r in refused["reason"])
    assert any(c.value.startswith("2 images were refused") and "(1 of the 2 wrong" in c.value for c in at.caption)
    # deferring 10% of 8 keeps 7: one image deferred, one of the two refused
    words = next(c.value for c in at.caption if "Coverage is the share of all images" in c.value)
    assert words.startswith("Deferring 1 image (12%): 1 of the 2 refused") and "(n 7 of 8)" in words
    at.session_state["_eval_staged"].remove()


def test_images_shown_with_a_caution_are_listed_with_how_the_model_did_on_them(app_env, page, tmp_path):
    """Session 21: the page said "N more were answered with a caution" and never which. A film shrunk to 12 x 12
    (under half the model's 32-pixel side: the small-image caution) under each class is listed with its decision,
    whether it was right and why it got the caution; the other answered images are the comparison."""
    from PIL import Image

    at = _upload_source(page)
    at.radio(key="eval_upload_mode").set_value("images")
    at.run()
    for i, cls in enumerate(["NORMAL", "PNEUMONIA"]):
        films = _sample(cls, 3)
        small = tmp_path / f"small_{cls.lower()}.png"
        Image.open(films[0]).convert("L").resize((12, 12)).save(small)
        at.file_uploader(key=f"eval_images_{i}").set_value(
            [(p.name, p.read_bytes(), "image/jpeg") for p in films] + [(small.name, small.read_bytes(), "image/png")])
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    assert "**Answered with a caution**" in [m.value for m in at.markdown]
    rows = next(d.value for d in at.dataframe if "decision" in d.value.columns)
    assert sorted(rows["file"]) == ["small_normal.png", "small_pneumonia.png"]
    assert list(rows.columns) == ["file", "true class", "decision", "right", "reason"]
    assert all("12 x 12 pixels" in r for r in rows["reason"])
    assert sorted(rows["true class"]) == ["NORMAL", "PNEUMONIA"]
    words = next(c.value for c in at.caption if "shown with a caution:" in c.value)
    assert words.startswith("2 answered images were shown with a caution") and "of the other 6" in words
    at.session_state["_eval_staged"].remove()


def test_a_patient_pattern_makes_the_intervals_resample_patients(app_env, page):
    """Session 21: `evaluate --group-pattern` had no field on the page. The chest sample holds one film per patient,
    so the pattern here groups by what the names share (bacteria, virus: two groups, each NORMAL film a group of
    its own): the intervals resample those groups and the metrics' heading says how many; a pattern that is not a
    regular expression is a plain warning and nothing is evaluated."""
    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    at.text_input(key="eval_group_pattern").set_value("person(")
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and any("is not a regular expression" in w.value for w in at.warning)
    assert not [m for m in at.markdown if m.value.startswith("**Metrics**")]
    at.text_input(key="eval_group_pattern").set_value(r"_(bacteria|virus)_")
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    heading = next(m.value for m in at.markdown if m.value.startswith("**Metrics**"))
    groups = {(m.group(1) if (m := re.search(r"_(bacteria|virus)_", p.name)) else p.name)
              for p in CHEST_SAMPLE.glob("*/*")}
    assert len(groups) == 42 and heading == "**Metrics** (95% bootstrap intervals, resampling 42 patients or cases)"
    # the 40 NORMAL names hold neither word: the page says so (walk-through, session 21: it said nothing)
    assert any(i.value == "The patient pattern matched 40 of the 80 file names; each of the other 40 counts as a "
               "patient of its own." for i in at.info)


def test_at_its_start_the_slider_gives_the_figures_above_it_exactly(own_models, page):
    """Walk-through, session 21: a site threshold of 0.745583 equal to a PNEUMONIA film's P; the slider starts at
    0.746 (its 0.001 steps) and the panel under it missed that film (sensitivity 93.3%) while the metrics above,
    at the exact threshold, did not (1.000). Here the card's threshold is set to a positive image's own P, one
    that rounds up: at its start the slider's panel must agree with the metrics table."""
    import json

    import numpy as np

    from medclf_core.formatting import percent
    from medclf_core.io.atomic import read_json
    from medclf_core.registry.store import read_card, stored_test_predictions
    from medclf_core.trust.calibration import stored_probabilities

    run = read_card(own_models / "tiny-a")
    stored = stored_test_predictions(run, read_json(own_models / "tiny-a", "evaluation.json"))
    pos = run.class_names.index("PNEUMONIA")
    p = stored_probabilities(run, stored["probs"])[:, pos][np.asarray(stored["y_true"]) == pos]
    rounds_up = [float(x) for x in p if round(float(x), 3) > float(x) and 0.02 < x < 0.98]
    assert rounds_up, p
    for name in ("tiny-a", "tiny-b"):
        card = json.loads((own_models / name / "card.json").read_text())
        card["threshold"] = rounds_up[0]
        (own_models / name / "card.json").write_text(json.dumps(card))
    at = page("evaluate")
    at.run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("metric")["value"]
    panel = at.metric[0].value
    assert at.slider[0].value == round(rounds_up[0], 3) and panel == percent(float(table["Sensitivity"]))


def test_a_typed_folder_and_its_result_survive_a_look_at_another_source(app_env, page):
    """Walk-through, session 21: folder -> own test split -> folder cleared the typed path and the result, and
    Evaluate then said "Type the path of a dataset folder or zip first"."""
    at = server_folder(page, "evaluate", CHEST_SAMPLE)
    at.text_input(key="eval_group_pattern").set_value(r"_(bacteria|virus)_")
    at.run()
    at.button(key="eval_go").click()
    at.run()
    assert at.subheader[0].value == "tiny-chest on 80 images"
    at.radio(key="eval_source").set_value("own")
    at.run()
    at.radio(key="eval_source").set_value("folder")
    at.run()
    assert not at.exception
    assert at.text_input(key="eval_folder").value == str(CHEST_SAMPLE)
    assert at.text_input(key="eval_group_pattern").value == r"_(bacteria|virus)_"
    assert at.subheader[0].value == "tiny-chest on 80 images"  # the result is shown again, not lost
