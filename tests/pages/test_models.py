"""Models page: registry table, model card, curves, compare, download, delete with confirmation."""

from __future__ import annotations

import re

import pytest


def test_registry_card_and_compare(own_models, page):
    at = page("models")
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["name"]) == ["tiny-a", "tiny-b"]
    assert {"task", "architecture", "classes", "accuracy", "AUC", "created"} <= set(table.columns)
    assert at.subheader[0].value in ("tiny-a", "tiny-b")
    assert at.get("download_button")
    assert len(at.get("plotly_chart")) == 2  # the card's curves and the comparison
    compared = at.dataframe[-1].value
    assert sorted(compared.columns) == ["tiny-a", "tiny-b"] and "accuracy" in compared.index


def test_delete_needs_confirmation(own_models, page):
    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    at.button(key="delete-tiny-b").click()
    at.run()
    assert "cannot be undone" in at.warning[0].value
    at.button(key="keep-tiny-b").click()
    at.run()
    assert (own_models / "tiny-b").is_dir()
    at.button(key="delete-tiny-b").click()
    at.run()
    at.button(key="confirm-delete-tiny-b").click()
    at.run()
    assert not at.exception
    assert not (own_models / "tiny-b").exists()
    assert "Deleted the model 'tiny-b'" in at.success[0].value
    assert list(at.dataframe[0].value["name"]) == ["tiny-a"]
    # issue 26: said at the top of the page (it was at the bottom, out of sight), and as a toast
    top = [c for _, c in sorted(at.main.children.items())][:2]
    assert [c.type for c in top] == ["title", "success"] and "Deleted the model 'tiny-b'" in top[1].value
    assert any("Deleted the model 'tiny-b'" in t.value for t in at.toast)


def test_a_seed_ensemble_card_lists_its_models(page, monkeypatch, tmp_path, trained_run):
    """The card and history of the previous imaging-modality model (a 3-model seed ensemble)."""
    import shutil

    from helpers import REPO

    run = tmp_path / "models" / "imaging-modality"
    shutil.copytree(REPO / "tests" / "fixtures" / "ensemble_run", run)
    shutil.copy(trained_run / "model.keras", run / "model.keras")  # the page reads the card, not the weights
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    at = _picked(page, "imaging-modality")
    facts = _facts(at)
    assert facts["Seed ensemble"].startswith("3 models (seeds 1337, 1338, 1339), mean of logits")
    assert facts["Epochs"].count(" / ") == 4  # one figure per model, for epochs run and best epoch
    curves = at.get("plotly_chart")[0].proto.spec
    assert "model 3 val" in curves


def _shown(text) -> str:
    """What the browser shows for a Markdown table cell: the escaping backslashes gone."""
    return re.sub(r"\\(.)", r"\1", str(text))


def _picked(page, name: str):
    """The Models page with the model ``name`` picked, after a run without an exception."""
    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value(name)
    at.run()
    assert not at.exception
    return at


def _facts(at) -> dict:
    """The model card's facts as shown (a static table: long values wrap instead of being cut off)."""
    table = at.table[0].value
    assert list(table.columns) == ["value"]
    return {_shown(k): _shown(v) for k, v in table["value"].items()}


def _edit_card(run, **changes):
    import json

    path = run / "card.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))
    return card


def _add_broken_runs(models):
    import shutil

    for folder, text in {"broken-list": "[]", "broken-created": '{"name": "broken-created", "class_names": ["a", "b"], '
                                                                 '"created": 12345}',
                         "broken-json": '{"name": '}.items():
        shutil.copytree(models / "tiny-a", models / folder)
        (models / folder / "card.json").write_text(text)


def test_a_bad_card_is_listed_as_unreadable_and_breaks_nothing(own_models, page):
    _add_broken_runs(own_models)
    at = page("models")
    at.run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["name"]) == ["tiny-a", "tiny-b"]
    assert "3 model folder(s) cannot be used" in at.warning[0].value
    bad = at.dataframe[1].value
    reasons = dict(zip(bad["folder"], bad["reason"], strict=True))
    assert sorted(reasons) == ["broken-created", "broken-json", "broken-list"]
    assert "'created' must be an ISO date" in reasons["broken-created"]
    assert "not valid JSON" in reasons["broken-json"] and "must be a JSON object" in reasons["broken-list"]
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    assert not at.exception and at.subheader[0].value == "tiny-b"


def test_only_bad_cards_still_render(own_models, page):
    import shutil

    _add_broken_runs(own_models)
    for name in ("tiny-a", "tiny-b"):
        shutil.rmtree(own_models / name)
    at = page("models")
    at.run()
    assert not at.exception
    assert any("No models are registered" in i.value for i in at.info)
    assert sorted(at.dataframe[0].value["folder"]) == ["broken-created", "broken-json", "broken-list"]


def test_toy_runs_are_marked_and_listed_after_real_models(own_models, page):
    real = _edit_card(own_models / "tiny-a", created="2020-01-01T00:00:00+00:00",
                      metrics={"split": "test", "n": 500, "accuracy": 0.9, "auc": 0.95,
                               "ci95": {"accuracy": [0.87, 0.93], "auc": [0.93, 0.97]}})
    _edit_card(own_models / "tiny-b", metrics={"split": "test", "n": 12, "accuracy": 1.0, "auc": 1.0,
                                               "ci95": {"accuracy": [1.0, 1.0], "auc": [1.0, 1.0]}})
    at = page("models")
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["name"]) == ["tiny-a", "tiny-b"]  # the newer toy run does not sit above the real model
    rows = {r["name"]: r for r in table.to_dict("records")}
    assert rows["tiny-a"]["n"] == 500 and rows["tiny-b"]["n"] == 12
    assert rows["tiny-a"]["accuracy"] == "0.900 (95% CI 0.870-0.930, n = 500)" and rows["tiny-a"]["note"] == ""
    assert rows["tiny-b"]["accuracy"] == "1.000 (n = 12, too few images for a reliable figure)"
    assert "toy run" in rows["tiny-b"]["note"]
    cells = " ".join(str(v) for v in table.to_numpy().ravel())
    assert "1.000-1.000" not in cells
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    facts = _facts(at)
    assert facts["Accuracy (same source)"] == "1.000 (n = 12, too few images for a reliable figure)"
    assert any("too few for a reliable figure" in c.value for c in at.caption)
    assert real["name"] == "tiny-a"


def test_other_source_evaluations_sit_beside_same_source_figures(own_models, page):
    from medclf_core.registry.evaluations import record_evaluation

    result = {"n": 200, "accuracy": 0.7, "auc": 0.81, "sensitivity": 0.95, "specificity": 0.64, "ece": 0.04,
              "ci95": {"accuracy": [0.64, 0.76], "auc": [0.75, 0.86]}, "threshold": 0.5, "split": "all",
              "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
              "confusion_matrix": [[51, 29], [6, 114]]}
    record_evaluation(own_models / "tiny-a", result, dataset="hospital-b", fingerprint="ab" * 32,
                      extra={"n_groups": 150})
    (own_models / "tiny-a" / "evaluations" / "2026-01-01-damaged.json").write_text("{")
    at = page("models")
    at.run()
    assert not at.exception
    rows = {r["name"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert rows["tiny-a"]["other-source accuracy"] == "0.700 (95% CI 0.640-0.760, n = 200) on hospital-b"
    assert rows["tiny-a"]["other-source AUC"] == "0.810 (95% CI 0.750-0.860, n = 200) on hospital-b"
    assert rows["tiny-b"]["other-source accuracy"] == "none recorded"
    at.selectbox(key="models_pick").set_value("tiny-a")
    at.run()
    evals = at.dataframe[1].value  # the table, then the evaluations (the card's facts are a static table)
    assert list(evals["dataset"]) == ["hospital-b"] and list(evals["n"]) == [200]
    assert list(evals["ECE"]) == ["0.040 (n = 200)"] and list(evals["fingerprint"]) == ["ab" * 6]
    # a sensitivity's n is the positive images, a specificity's the others (it printed n = 200 for both)
    assert list(evals["sensitivity"]) == ["0.950 (n = 120)"] and list(evals["specificity"]) == ["0.640 (n = 80)"]
    assert list(evals["patients or cases"]) == ["150"]  # its intervals resampled patients (evaluate --group-pattern)


def test_a_weak_gate_is_said_once_above_the_facts(own_models, page):
    """Walk-through: the weak-gate notice was a caption and again the "Out-of-distribution check" row."""
    import json

    card = json.loads((own_models / "tiny-b" / "card.json").read_text())
    _edit_card(own_models / "tiny-b", ood={**(card.get("ood") or {}), "n_train": 28, "n_val": 6})
    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    assert not at.exception
    shown = [c.value for c in at.caption] + [str(v) for t in at.table for v in t.value.to_numpy().ravel()]
    assert sum("only 28 training and 6 validation images" in text for text in shown) == 1
    assert "fitted on 28 training and 6 validation images" in shown


def _bundled(own_models, how):
    if how == "flag":
        _edit_card(own_models / "tiny-b", bundled=True)
        return "tiny-b"
    (own_models / "tiny-b").rename(own_models / "imaging-modality")
    _edit_card(own_models / "imaging-modality", name="imaging-modality")
    return "imaging-modality"


@pytest.mark.parametrize("how", ["flag", "name"])
def test_deleting_a_bundled_model_needs_its_name_typed(own_models, page, how):
    name = _bundled(own_models, how)
    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value(name)
    at.run()
    at.button(key=f"delete-{name}").click()
    at.run()
    assert "bundled with medclf" in at.warning[0].value
    assert at.button(key=f"confirm-delete-{name}").disabled
    at.text_input(key=f"confirm-name-{name}").input("tiny")
    at.run()
    assert at.button(key=f"confirm-delete-{name}").disabled
    assert (own_models / name).is_dir() and not at.exception
    at.text_input(key=f"confirm-name-{name}").input(name)
    at.run()
    assert not at.button(key=f"confirm-delete-{name}").disabled
    at.button(key=f"confirm-delete-{name}").click()
    at.run()
    assert not at.exception
    assert not (own_models / name).exists()
    assert f"Deleted the model '{name}'" in at.success[0].value


@pytest.mark.parametrize("fmt", ["tflite", "savedmodel"])
def test_export_button_offers_a_zip_of_the_export_with_its_card(own_models, page, fmt):
    import io
    import json
    import zipfile

    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    assert not [b for b in at.get("download_button") if b.proto.id.endswith("export-download-tiny-b")]
    at.radio(key="export-format-tiny-b").set_value(fmt)
    at.run()
    at.button(key="export-tiny-b").click()
    at.run()
    assert not at.exception and not at.error
    name, chosen, data, file_name = at.session_state["models_export"]
    assert (name, chosen, file_name) == ("tiny-b", fmt, f"tiny-b-{fmt}.zip")
    labels = [b.proto.label for b in at.get("download_button")]
    assert any(label.startswith(f"Download tiny-b-{fmt}.zip") for label in labels)
    zf = zipfile.ZipFile(io.BytesIO(data))
    card_name = "tiny-b-savedmodel/assets/card.json" if fmt == "savedmodel" else "tiny-b.card.json"
    card = json.loads(zf.read(card_name))
    assert card["name"] == "tiny-b" and card["export"]["format"] == fmt
    assert ("tiny-b-savedmodel/saved_model.pb" if fmt == "savedmodel" else "tiny-b.tflite") in zf.namelist()
    at.radio(key="export-format-tiny-b").set_value("tflite" if fmt == "savedmodel" else "savedmodel")
    at.run()  # another format: the old zip is not offered as if it were this one
    assert not any(b.proto.label.startswith(f"Download tiny-b-{fmt}.zip") for b in at.get("download_button"))


# ---------------------------------------------------------------------------- issue 26

def _widths(element) -> dict:
    """The pixel widths a dataframe element was drawn with (its column configuration)."""
    import json

    config = json.loads(element.proto.columns or "{}")
    return {name: c.get("width") for name, c in config.items()}


def test_wide_columns_are_as_wide_as_their_text(own_models, page):
    """Issue 26: the AUC, other-source and created columns and the compare table's threshold and 'reliable' rows
    were cut off: every column (the compare table's row labels too) is as wide as its longest text."""
    from medclf_core.reports.tables import fitted_widths

    at = page("models")
    at.run()
    assert not at.exception
    registry = at.dataframe[0]
    widths = _widths(registry)
    for column in ("AUC", "other-source accuracy", "other-source AUC", "created", "accuracy"):
        assert widths.get(column) == fitted_widths({column: registry.value[column]})[column], column
    assert widths["other-source accuracy"] >= 7 * len("none recorded")
    compared = at.dataframe[-1]
    widths = _widths(compared)
    assert {"threshold", "reliable (n >= 30)"} <= set(compared.value.index)
    assert widths.get("_index") == fitted_widths({"_index": compared.value.index})["_index"]
    assert widths["_index"] >= 7 * len("reliable (n >= 30)")
    for run in compared.value.columns:
        assert widths.get(run) == fitted_widths({run: compared.value[run]})[run], run


# ---------------------------------------------------------------------------- walk-through: a cross-validated run

CV_METRICS = {"split": "cross-validation (out-of-fold)", "n": 80, "accuracy": 0.95, "auc": 0.986,
              "sensitivity": 0.925, "specificity": 0.975, "ci95": {"accuracy": [0.9, 0.9875], "auc": [0.96, 1.0]}}
CV_HEAD = {"C": 0.0316, "folds": 5, "cv_log_loss": {"0.001": 0.27, "0.0316": 0.16, "1": 0.19}}


def _as_cross_validated(run):
    """The run as the 80-image sample's default recipe writes it: out-of-fold figures, one cross-validation
    record in its history, the cross-validation of its head on its card."""
    import json

    card = json.loads((run / "card.json").read_text())
    _edit_card(run, metrics=CV_METRICS, validation_metrics=CV_METRICS,
               recipe={**(card.get("recipe") or {}), "name": "transfer", "cross_validated_head": CV_HEAD})
    (run / "history.json").write_text(json.dumps([{"epoch": 0, "phase": "cross_validation", "cv_log_loss": 0.16,
                                                   "C": 0.0316, "folds": 5, "seconds": 0.8}]))


def test_a_cross_validated_runs_figures_say_so_and_it_has_no_empty_curves(own_models, page):
    """Walk-through: the table listed a run's cross-validation accuracy 0.950 under the held-out test heading,
    the card said 'Test images 80', and its accuracy and loss charts were empty axes."""
    import json

    _as_cross_validated(own_models / "tiny-b")
    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value("tiny-b")
    at.run()
    assert not at.exception
    rows = {r["name"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert rows["tiny-b"]["accuracy"] == "0.950 (95% CI 0.900-0.988, n = 80) (cross-validated)"
    assert rows["tiny-b"]["AUC"].endswith("(cross-validated)") and "cross-validated" not in rows["tiny-a"]["accuracy"]
    assert any("marked (cross-validated)" in c.value for c in at.caption)
    assert [m.label for m in at.metric][4] == "Images (cross-validated)"
    assert any("out-of-fold predictions of all 80 images" in c.value and "no held-out test split" in c.value
               for c in at.caption)
    assert any("no accuracy or loss curves" in c.value for c in at.caption)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [a.get("text") for c in charts for a in c["layout"].get("annotations", [])]
    assert titles.count("accuracy") == 1  # the other run's curves in the comparison only, none for tiny-b
    card_chart = charts[0]
    assert card_chart["layout"]["xaxis"]["type"] == "log" and card_chart["data"][0]["y"] == [0.27, 0.16, 0.19]
    compared = at.dataframe[-1].value
    assert compared.loc["figures on", "tiny-b"] == "out-of-fold predictions of all 80 images"
    assert any("No epoch curves for tiny-b" in c.value for c in at.caption)


def test_the_positive_class_and_threshold_use_the_cards_plain_words(own_models, page):
    """The brain card's facts read "on P(yes)" where every other view reads "tumour"."""
    card = _edit_card(own_models / "tiny-a", intended_use={"summary": "demo",
                                                           "class_labels": {"PNEUMONIA": "pneumonia found"}})
    facts = _facts(_picked(page, "tiny-a"))
    assert facts["Positive class"] == "PNEUMONIA (pneumonia found)"
    assert facts["Operating threshold"].startswith(f"{card['threshold'] * 100:.1f}% on P(pneumonia found) (")
