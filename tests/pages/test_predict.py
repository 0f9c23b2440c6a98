"""Predict page: upload, samples, heat map, bad files, many files."""

from __future__ import annotations

import pytest

from helpers import SAMPLES, rendered, result_images

from medclf_core.inference.results import REASON

JPEG = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[0]


def _upload(at, files):
    at.file_uploader(key="predict_upload").set_value(files)
    at.run()
    assert not at.exception, at.exception


def test_upload_shows_prediction_decision_chart_and_overlay(app_env, page):
    at = page("predict")
    at.run()
    assert not at.exception
    assert "Upload an image" in at.info[0].value
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    assert at.subheader[0].value.startswith(f"{JPEG.name}: ")
    assert "(P(PNEUMONIA) " in rendered(at.subheader[0].value)  # decision + P(positive)
    assert any("Decision at the model's operating threshold" in rendered(m.value) for m in at.markdown)
    assert len(result_images(at)) == 2  # the original and the Grad-CAM overlay
    # the threshold's rule says "validation split" and "calibrated probabilities" once each (the walk-through read
    # "... on calibrated probabilities (validation split, calibrated probabilities).")
    rule = [rendered(c.value) for c in at.caption if c.value.startswith("Operating threshold: ")]
    assert len(rule) == 1 and rule[0].count("calibrated probabilities") == 1, rule
    assert len(at.get("plotly_chart")) == 1

    # the heat-map controls rerun the fragment only and keep the page intact
    for method in ("gradcam++", "scorecam"):
        at.selectbox(key=[s.key for s in at.selectbox if s.key.startswith("cam-method")][0]).set_value(method)
        at.run()
        assert not at.exception
        assert len(result_images(at)) == 2 or any("not available" in i.value for i in at.info)
    at.slider(key=[s.key for s in at.slider if s.key.startswith("cam-opacity")][0]).set_value(0.8)
    at.run()
    assert not at.exception and len(result_images(at)) >= 1


def test_reading_guide_and_heatmap_settings_before_and_after_an_upload(app_env, page):
    """Issue 22 item 7: the guide (collapsed) is on the empty page with the colour legend and the heat-map
    settings, and stays after an upload; the settings are the defaults of a new image's panel."""
    at = page("predict")
    at.run()
    guide = [e for e in at.expander if e.label.startswith("How to read a result")]
    assert len(guide) == 1 and not result_images(at)
    assert len(at.image) == 1  # the colour legend
    at.selectbox(key="heatmap-pref-method").set_value("gradcam++")
    at.slider(key="heatmap-pref-opacity").set_value(0.7)
    at.run()
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    assert [e.label for e in at.expander].count(guide[0].label) == 1
    method = at.selectbox(key=[s.key for s in at.selectbox if s.key.startswith("cam-method")][0])
    opacity = at.slider(key=[s.key for s in at.slider if s.key.startswith("cam-opacity")][0])
    assert method.value == "gradcam++" and opacity.value == 0.7
    assert "Grad-CAM++ for" in " ".join(c for im in result_images(at) for c in im.captions)
    method.set_value("scorecam").run()  # this image's own choice outlives a later change of the defaults
    at.selectbox(key="heatmap-pref-method").set_value("gradcam").run()
    assert not at.exception and at.selectbox(key=method.key).value == "scorecam"


def test_bad_upload_shows_a_message_and_the_good_file_still_goes_through(app_env, page):
    at = page("predict")
    at.run()
    _upload(at, ("broken.png", b"this is not an image", "image/png"))
    assert "broken.png" in rendered(at.warning[0].value) and "could not be used" in at.warning[0].value
    assert not at.error and not at.subheader
    _upload(at, [(JPEG.name, JPEG.read_bytes(), "image/jpeg"), ("broken.png", b"junk", "image/png")])
    assert len(at.warning) == 1
    table = at.dataframe[0].value
    assert list(table["file"]) == [JPEG.name, "broken.png"]
    assert table["decision"][0] in ("NORMAL", "PNEUMONIA")
    assert table["probability"][0].startswith("P(PNEUMONIA) ")  # the headline's probability: P(positive class)
    # walk-through: the unread file's long message filled the decision column and pushed the probability,
    # borderline and out-of-distribution columns out of sight; now a short decision and the message last
    assert table["decision"][1] == "not read" and "not an image" in table["note"][1]
    columns = list(table.columns)
    assert columns[:6] == ["file", "decision", "probability", "borderline", "unfamiliar", "out of distribution"]
    assert columns[-1] == "note" and table["probability"][1] == ""


def test_sample_buttons_and_many_images(app_env, page):
    at = page("predict")
    at.run()
    at.button(key=f"sample-{JPEG.name}").click()
    at.run()
    assert not at.exception and at.subheader[0].value.startswith(JPEG.name)
    dicom = sorted((SAMPLES / "dicom").glob("*.dcm"))[0]
    at.button(key=f"sample-{dicom.name}").click()
    at.run()
    assert not at.exception and at.subheader[0].value.startswith(dicom.name)
    at.button(key="sample-all").click()
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 10 and {"P(NORMAL)", "P(PNEUMONIA)", "decision"} <= set(table.columns)
    assert at.get("download_button")
    assert len(result_images(at)) >= 10 + 2  # gallery + details of one


def _runs_with_cards(trained_run, models, **variants) -> None:
    """Copies of the tiny trained run whose cards differ only by the given entries."""
    import json
    import shutil

    for name, changes in variants.items():
        shutil.copytree(trained_run, models / name)
        card = json.loads((models / name / "card.json").read_text())
        card.update(name=name, **changes)
        (models / name / "card.json").write_text(json.dumps(card))


def test_a_model_with_test_time_flips_says_so(page, monkeypatch, tmp_path, trained_run):
    _runs_with_cards(trained_run, tmp_path / "models", flips={"tta": ["hflip"]}, plain={"tta": []})
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    for model, expected in (("flips", True), ("plain", False)):
        monkeypatch.setenv("MEDCLF_DEFAULT_MODEL", model)
        at = page("predict")
        at.run()
        _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
        assert any("mirror image (test-time augmentation)" in c.value for c in at.caption) is expected, model


def test_a_seed_ensemble_says_so(page, monkeypatch, tmp_path, trained_run):
    _runs_with_cards(trained_run, tmp_path / "models", three={"ensemble": {"members": 3, "seeds": [1, 2, 3]}},
                     single={"ensemble": None})
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    for model, n in (("three", 3), ("single", None)):
        monkeypatch.setenv("MEDCLF_DEFAULT_MODEL", model)
        at = page("predict")
        at.run()
        _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
        assert not at.exception
        assert any(f"averages {n} networks" in c.value for c in at.caption) is bool(n), model


def test_an_out_of_distribution_image_gets_a_warning_not_a_finding(refitted_env, page):
    mr = SAMPLES / "dicom" / "MR_emri_small.dcm"
    at = page("predict")
    at.run()
    _upload(at, (mr.name, mr.read_bytes(), "application/dicom"))
    warning = rendered(at.warning[0].value)  # the page escapes the message's Markdown characters
    # the header's facts refuse it (modality MR on a chest X-ray model): the model is not for it, whatever it looks like
    assert warning.startswith("This model is not for this image")
    assert "modality MR" in warning and warning.endswith("The model's answer is not shown as a finding.")
    assert at.subheader[0].value == f"{mr.name}: not an image this model knows"  # its features refused it too
    assert not any("Decision" in m.value for m in at.markdown)
    assert at.expander and any("not a finding" in e.label for e in at.expander)
    # walk-through: the refused image's output was drawn in the finding's red, and its score caption read as if
    # the unfamiliar threshold were the refuse one: grey bars, each threshold with its own value
    import json as _json

    from medclf_core.reports.plots import MUTED

    (chart,) = at.get("plotly_chart")
    assert set(_json.loads(chart.proto.spec)["data"][0]["marker"]["color"]) == {MUTED}
    score = [rendered(c.value) for c in at.caption if rendered(c.value).startswith("Feature score ")]
    assert len(score) == 1 and "; unfamiliar above " in score[0] and ", refused above " in score[0], score

    # with a chest X-ray beside it: the table does not present the MR's class either
    _upload(at, [(JPEG.name, JPEG.read_bytes(), "image/jpeg"), (mr.name, mr.read_bytes(), "application/dicom")])
    table = at.dataframe[0].value
    row = table[table["file"] == mr.name].iloc[0]
    assert row["out of distribution"] == "yes" and row["decision"].startswith("out of distribution: not a finding")
    # issue 26: the reason in a column of its own, as wide as the reason (it was cut off inside the decision)
    import json

    from medclf_core.reports.tables import fitted_widths

    reason = row[REASON]
    assert "modality MR" in reason
    width = json.loads(at.dataframe[0].proto.columns)[REASON]["width"]
    assert width == fitted_widths({"r": [reason]})["r"] and width >= 7 * len(reason)
    assert row["probability"] == ""  # no finding: empty, never the text "None"
    assert set(table["out of distribution"]) <= {"yes", "no"}
    csv_text = at.session_state["predict_csv"]
    assert "ood,ood_score,ood_reason" in csv_text.splitlines()[0]


def test_a_model_without_a_gate_says_not_checked(older_env, page):
    at = page("predict")
    at.run()
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    assert any("Not checked for out-of-distribution images" in c.value for c in at.caption)
    assert not at.warning


def test_the_model_says_what_it_is_for_and_how_it_did_same_source_and_elsewhere(app_env, page):
    """Intended use and the figures with their n: the own test split beside recorded other-source evaluations."""
    at = page("predict")
    at.run()
    assert not at.exception
    (table,) = at.table
    rows = table.value
    assert rows.index[0].startswith("own test split")
    assert "n =" in str(rows.iloc[0]["accuracy"])  # every figure with its n


def test_the_heat_map_comes_with_its_faithfulness_score(app_env, page):
    """Beside the map: its deletion-test score (or why there is none), with a help text saying what it means."""
    at = page("predict")
    at.run()
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    scores = [c for c in at.caption if c.value.startswith("Faithfulness")]
    assert len(scores) == 1, [c.value for c in at.caption]
    assert "random" in scores[0].proto.help and "blanked" in scores[0].proto.help
    # another method: its own score, computed for the shown map only
    at.selectbox(key=[s.key for s in at.selectbox if s.key.startswith("cam-method")][0]).set_value("gradcam++")
    at.run()
    assert not at.exception
    assert len([c for c in at.caption if c.value.startswith("Faithfulness")]) == 1
    assert len(at.session_state["_faithfulness"]) == 2


def test_a_damaged_jpeg_is_shown_with_a_warning_and_an_identifier_in_a_file_name_is_not(app_env, page):
    """Issue 17: the decoder's corruption warning reaches the page; one file-name rule for display."""
    from bad_inputs import WARNING_CASES

    (case,) = WARNING_CASES
    at = page("predict")
    at.run()
    _upload(at, ("Zzyzxqa_MRN-9988776655.jpg", case.make(), "image/jpeg"))
    assert not at.exception
    warnings = [rendered(w.value) for w in at.warning]
    assert any("JPEG data is damaged" in w for w in warnings), warnings
    shown = " ".join([*warnings, *(rendered(c.value) for c in at.caption), *(rendered(m.value) for m in at.markdown)])
    assert "9988776655" not in shown


# ----------------------------------------------------------------------------- issue 16: rough edges, cold start

def test_the_uploader_accepts_and_names_every_format_the_core_decodes(app_env, page):
    from medclf_core.io.images import IMAGE_SUFFIXES

    at = page("predict")
    at.run()
    (uploader,) = at.get("file_uploader")
    accepted = {t.lstrip(".").lower() for t in uploader.proto.type}
    assert accepted == {s.lstrip(".") for s in IMAGE_SUFFIXES}
    # issue 26: the label lists exactly the formats of the uploader's own hint under it, which names one of
    # each pair Streamlit accepts together (.jpg/.jpeg, .tif/.tiff): the first, as its frontend does
    from streamlit.elements.lib.file_uploader_utils import TYPE_PAIRS

    first = {b.lstrip("."): a.lstrip(".") for a, b in TYPE_PAIRS}
    hint = list(dict.fromkeys(first.get(t.lstrip(".").lower(), t.lstrip(".").lower()) for t in uploader.proto.type))
    named = uploader.proto.label.split("(", 1)[1].rstrip(")").split(", ")
    assert sorted(named) == sorted(t.upper() for t in hint), (named, hint)


def test_sample_buttons_have_short_labels_and_the_file_name_as_help(app_env, page):
    at = page("predict")
    at.run()
    samples = [b for b in at.button if b.key.startswith("sample-") and b.key not in ("sample-all", "sample-clear")]
    assert len(samples) == 10
    labels = [b.label for b in samples]
    assert len(set(labels)) == len(labels)
    assert max(len(lb) for lb in labels) <= 14, labels  # one fifth of the page: longer labels were cut off
    for b in samples:
        assert b.help == b.key.removeprefix("sample-")


def test_the_results_table_gives_every_column_the_width_of_its_text(app_env, page):
    """Issue 26: 'out of distribution' and the P(...) columns were cut off: every column, header included, is
    as wide as its longest text (medclf_core.reports.tables.fitted_widths)."""
    import json

    from medclf_core.reports.tables import fitted_widths

    at = page("predict")
    at.run()
    at.button(key="sample-all").click()
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    config = json.loads(at.dataframe[0].proto.columns)
    probabilities = [c for c in table.columns if c.startswith("P(")]
    assert probabilities and "out of distribution" in table.columns
    for column in ["file", "decision", "out of distribution", *probabilities]:
        assert config[column]["width"] == fitted_widths({column: table[column]})[column], (column, config)
        assert config[column]["width"] >= 7 * len(column), column  # the header fits


def test_the_threshold_label_has_room_above_the_chart(app_env, page):
    import json

    at = page("predict")
    at.run()
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    (chart,) = at.get("plotly_chart")
    layout = json.loads(chart.proto.spec)["layout"]
    (label,) = [a for a in layout["annotations"] if a["text"].startswith("threshold for")]
    assert label["yanchor"] == "bottom" and label["y"] >= 1  # drawn above the plot area ...
    assert layout["margin"]["t"] >= 30                        # ... so the top margin must hold a line of text


def test_the_file_input_is_drawn_before_the_model_loads(app_env, page, tmp_path, monkeypatch):
    """A model that cannot load still leaves the uploader on the page (it comes before the load).

    Its architecture passes the checks made before loading (registry.model_limits: a file that is no
    .keras at all is not offered), but its weights are damaged, so only the load itself fails."""
    import shutil
    import zipfile

    models = tmp_path / "models"
    shutil.copytree(app_env, models / "broken")
    with zipfile.ZipFile(app_env / "model.keras") as good, \
            zipfile.ZipFile(models / "broken" / "model.keras", "w") as broken:
        for item in good.infolist():
            broken.writestr(item, b"not an HDF5 file" if item.filename.endswith(".h5") else good.read(item))
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(models))
    at = page("predict")
    at.run()
    assert not at.exception
    assert at.error and "cannot be loaded" in at.error[0].value
    assert len(at.get("file_uploader")) == 1


def test_the_models_compiled_graphs_survive_between_runs(app_env, page, monkeypatch):
    """Streamlit clears Keras after every run (keras.backend.clear_session), which empties TensorFlow's
    kernel cache: each run then re-optimised every graph it called (0.3 s each on 2 cores). The app
    turns that clear off (medclf_core.server.streamlit_compat.keep_keras_between_runs); Streamlit's matplotlib
    clean-up stays."""
    import sys
    import types

    from streamlit.runtime.scriptrunner import script_runner
    from tensorflow.python.eager import context

    clears = []
    original = context.Context.clear_kernel_cache
    monkeypatch.setattr(context.Context, "clear_kernel_cache",
                        lambda self: (clears.append(1), original(self))[1])
    at = page("predict")
    at.run()
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    at.slider(key=[s.key for s in at.slider if s.key.startswith("cam-opacity")][0]).set_value(0.8)
    at.run()
    assert not at.exception
    assert clears == []

    closed = []
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot",
                        types.SimpleNamespace(close=lambda which: closed.append(which)))
    script_runner._clean_problem_modules()
    assert closed == ["all"] and clears == []


# ----------------------------------------------------------------------------- issue 22: the page only draws

def test_the_page_draws_what_the_predictor_hands_back(app_env, page, monkeypatch):
    """Upload to heat map: one Predictor.explain and one check_faithfulness per (image, method, class), kept
    under the core's result_key; another opacity re-draws the kept map (HeatMap.overlay), nothing recomputed."""
    from medclf_core.inference.predictor import Predictor
    from medclf_core.inference.results import DISPLAY_SIDE, HeatMap

    at = page("predict")
    at.run()  # the model loads and warms up here
    calls = {"explain": [], "check_faithfulness": [], "overlay": []}

    def counting(cls, name):
        real = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            calls[name].append(args[1:] if name == "explain" else args)
            return real(self, *args, **kwargs)
        monkeypatch.setattr(cls, name, wrapper)

    counting(Predictor, "explain")
    counting(Predictor, "check_faithfulness")
    counting(HeatMap, "overlay")
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    assert len(calls["explain"]) == 1 and len(calls["check_faithfulness"]) == 1 and calls["overlay"] == [(0.45, DISPLAY_SIDE)]
    at.slider(key=[s.key for s in at.slider if s.key.startswith("cam-opacity")][0]).set_value(0.8)
    at.run()
    assert not at.exception
    assert len(calls["explain"]) == 1 and len(calls["check_faithfulness"]) == 1 and calls["overlay"][-1] == (0.8, DISPLAY_SIDE)
    method = at.selectbox(key=[s.key for s in at.selectbox if s.key.startswith("cam-method")][0])
    method.set_value("gradcam++").run()
    method.set_value("gradcam").run()
    assert not at.exception
    assert [c[0] for c in calls["explain"]] == ["gradcam", "gradcam++"]      # the first map was kept
    assert len(calls["check_faithfulness"]) == 2


def test_a_large_film_is_shown_at_display_size(app_env, page, monkeypatch):
    """A 2048 px film: the original and its overlay reach the browser at most DISPLAY_SIDE px on their longer
    side (blended at that size) and the caption gives the full size."""
    import io

    import numpy as np
    from PIL import Image
    from streamlit.runtime.media_file_manager import MediaFileManager

    from medclf_core.inference.results import DISPLAY_SIDE

    sent = []
    real_add = MediaFileManager.add

    def recording(self, data, mimetype, *args, **kwargs):
        if mimetype.startswith("image/") and isinstance(data, bytes):
            sent.append(Image.open(io.BytesIO(data)).size)
        return real_add(self, data, mimetype, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", recording)
    film = np.asarray(Image.open(JPEG).convert("L").resize((1536, 2048)))
    buf = io.BytesIO()
    Image.fromarray(film).save(buf, format="PNG")
    at = page("predict")
    at.run()
    sent.clear()
    _upload(at, ("film.png", buf.getvalue(), "image/png"))
    shown = result_images(at)
    assert len(shown) == 2 and any("1536x2048" in rendered(c) for c in shown[0].captions)
    pictures = [size for size in sent if size[1] > 100]  # not the colour legend (16 px high)
    assert pictures == [(DISPLAY_SIDE * 3 // 4, DISPLAY_SIDE)] * 2, sent  # (width, height): original, overlay


def test_the_predict_page_computes_nothing_itself():
    """No heat-map, faithfulness or trust code on the page: it imports the facade's results, never the layers below."""
    import ast

    from helpers import REPO

    tree = ast.parse((REPO / "pages" / "predict.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    below = [m for m in imported if m and m.startswith(("medclf_core.explain", "medclf_core.trust",
                                                         "medclf_core.server.memory", "medclf_core.models"))]
    assert not below, below
    assert {"hashlib", "numpy"}.isdisjoint(imported)


def test_the_unfamiliar_caution_quotes_the_worst_and_best_recorded_other_source(tmp_path):
    """The brain card records two other sources; the caution quoted only the newest record, whichever it was."""
    from streamlit.testing.v1 import AppTest

    from medclf_core.registry.evaluations import record_evaluation

    for n, acc, fp in ((87, 0.931, "aa"), (256, 0.523, "bb")):
        record_evaluation(tmp_path, {"n": n, "accuracy": acc}, dataset=f"d{n}", fingerprint=fp * 32)

    def script(run_dir):
        import app_ui

        app_ui.unfamiliar_caution({"unfamiliar": True, "unfamiliar_checks": ["features"]}, {"run_dir": run_dir})
        app_ui.unfamiliar_caution({"unfamiliar": False}, {"run_dir": run_dir})

    at = AppTest.from_function(script, args=(str(tmp_path),), default_timeout=60)
    at.run()
    assert not at.exception
    assert [w.value.replace("\\", "") for w in at.warning] == [  # the Markdown source: escapes dropped
        "Caution: this image is unlike this model's training images (on other sources, its accuracy was 52.3% on "
        "256 images to 93.1% on 87), so the finding is less certain."]


@pytest.mark.parametrize("threshold, shown", [(0.0, True), (1.0, False)])
def test_a_finding_is_shown_with_the_cards_known_mimics(own_models, page, threshold, shown):
    """MedPix: the brain model called 62% of slices of other brain disease tumour. Under a finding (never under a
    negative) the page says what else the model calls a finding, in the card's words."""
    import json

    path = own_models / "tiny-a" / "card.json"
    card = json.loads(path.read_text())
    card.update(threshold=threshold, positive_class="PNEUMONIA", schema_version=2,
                intended_use={"summary": "demo", "finding_mimics": "it also calls *some* other things pneumonia."})
    path.write_text(json.dumps(card))
    (own_models / "tiny-b" / "card.json").unlink()  # one model: the page's default
    at = page("predict")
    at.run()
    _upload(at, (JPEG.name, JPEG.read_bytes(), "image/jpeg"))
    assert not at.exception
    limits = [c.value for c in at.info if c.value.startswith("Known limit of this model")]  # a box, not a caption
    assert limits == (["Known limit of this model: it also calls \\*some\\* other things pneumonia."] if shown else [])
