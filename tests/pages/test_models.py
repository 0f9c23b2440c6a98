"""Models page: registry table, model card, curves, compare, download, delete with confirmation."""

from __future__ import annotations


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


def test_a_seed_ensemble_card_lists_its_models(page, monkeypatch, tmp_path):
    from helpers import REPO

    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(REPO / "models"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    at = page("models")
    at.run()
    at.selectbox(key="models_pick").set_value("imaging-modality")
    at.run()
    assert not at.exception
    facts = dict(zip(at.dataframe[1].value[""], at.dataframe[1].value["value"], strict=True))
    assert facts["Seed ensemble"].startswith("3 models (seeds 1337, 1338, 1339), mean of logits")
    assert facts["Epochs"].count(" / ") == 4  # one figure per model, for epochs run and best epoch
    curves = at.get("plotly_chart")[0].proto.spec
    assert "model 3 val" in curves
