"""medclf_core.registry.store: atomic writes, list/load/delete, safe loading."""

from __future__ import annotations

import json

import pytest

from medclf_core.errors import ModelError
from medclf_core.registry.store import (delete_run, list_runs, load_model_file, load_run, resolve_run, unique_run_name,
                                        write_run_atomically)


def _tiny_model():
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(x))


def _write(folder, name="r"):
    _tiny_model().save(folder / "model.keras")
    (folder / "card.json").write_text(json.dumps({"name": name, "class_names": ["a", "b"], "created": "2026-01-01"}))


def test_atomic_write_registers_complete_runs(tmp_path):
    run = write_run_atomically(tmp_path, "good", _write)
    assert run == tmp_path / "good" and (run / "model.keras").is_file()
    assert [r["name"] for r in list_runs(tmp_path)] == ["r"]
    model, card = load_run("good", tmp_path)
    assert card["run_dir"] == str(run) and model.output_shape == (None, 2)


def test_failed_write_leaves_nothing(tmp_path):
    def crash(folder):
        _write(folder)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_run_atomically(tmp_path, "bad", crash)
    assert list(tmp_path.iterdir()) == [] and list_runs(tmp_path) == []


def test_incomplete_write_is_refused(tmp_path):
    with pytest.raises(ModelError, match="incomplete"):
        write_run_atomically(tmp_path, "half", lambda f: (f / "card.json").write_text("{}"))
    assert list(tmp_path.iterdir()) == []


def test_existing_name_is_not_overwritten(tmp_path):
    write_run_atomically(tmp_path, "x", _write)
    with pytest.raises(ModelError, match="already exists"):
        write_run_atomically(tmp_path, "x", _write)
    assert unique_run_name("x", tmp_path) == "x-2"


def test_hidden_and_partial_folders_are_not_listed(tmp_path):
    (tmp_path / ".tmp-abc").mkdir()
    (tmp_path / "nocard").mkdir()
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "card.json").write_text("{}")
    assert list_runs(tmp_path) == []


def test_delete(tmp_path):
    write_run_atomically(tmp_path, "gone", _write)
    delete_run("gone", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="No model run"):
        resolve_run("gone", tmp_path)


def test_safe_mode_refuses_lambda(tmp_path):
    import keras

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelError, match="Lambda"):
        load_model_file(path)


def test_damaged_model_file(tmp_path):
    path = tmp_path / "bad.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelError):
        load_model_file(path)


# ---------------------------------------------------------------------------- bad cards (issue 17 item 2)

BAD_CARDS = {
    "is-a-list": ("[]", "it must be a JSON object, not a list"),
    "created-number": (json.dumps({"name": "x", "class_names": ["a", "b"], "created": 12345}), "'created' must be"),
    "no-name": (json.dumps({"class_names": ["a", "b"]}), "it has no 'name'"),
    "int-classes": (json.dumps({"name": "x", "class_names": [0, 1]}), "'class_names' must be a list"),
    "text-threshold": (json.dumps({"name": "x", "class_names": ["a", "b"], "threshold": "0.5"}), "'threshold' must be"),
    "not-json": ('{"name": "x", ', "not valid JSON"),
    "not-utf8": (b"\xff\xfe\x00", "not valid JSON"),
}


def _registry_with_bad_cards(tmp_path):
    write_run_atomically(tmp_path, "good", _write)
    model = tmp_path / "good" / "model.keras"
    for folder, (text, _) in BAD_CARDS.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.keras").write_bytes(model.read_bytes())
        card = tmp_path / folder / "card.json"
        card.write_bytes(text) if isinstance(text, bytes) else card.write_text(text)
    (tmp_path / "model-only").mkdir()
    (tmp_path / "model-only" / "model.keras").write_bytes(model.read_bytes())
    (tmp_path / "card-only").mkdir()
    (tmp_path / "card-only" / "card.json").write_text(json.dumps({"name": "c", "class_names": ["a", "b"]}))
    (tmp_path / "unrelated").mkdir()
    (tmp_path / ".tmp-half").mkdir()
    (tmp_path / ".tmp-half" / "card.json").write_text("[]")


def test_one_bad_card_never_breaks_the_list(tmp_path):
    from medclf_core.registry.card import ModelCard
    from medclf_core.registry.store import list_unreadable_runs, scan_registry

    _registry_with_bad_cards(tmp_path)
    runs, unreadable = scan_registry(tmp_path)
    assert [r["name"] for r in runs] == ["r"] and isinstance(runs[0], ModelCard)
    assert runs[0]["tta"] == [] and runs[0]["run_dir"] == str(tmp_path / "good")
    assert [r["name"] for r in list_runs(tmp_path)] == ["r"]
    reasons = {u["name"]: u["reason"] for u in unreadable}
    assert sorted(reasons) == sorted([*BAD_CARDS, "model-only", "card-only"])  # not .tmp-half, not unrelated
    for folder, (_, fragment) in BAD_CARDS.items():
        assert fragment in reasons[folder], (folder, reasons[folder])
    assert "no card.json" in reasons["model-only"] and "model.keras is missing" in reasons["card-only"]
    assert all(u["unreadable"] is True and u["run_dir"] == str(tmp_path / u["name"]) for u in unreadable)
    assert list_unreadable_runs(tmp_path) == unreadable


@pytest.mark.parametrize("folder", sorted(BAD_CARDS))
def test_a_bad_card_is_a_plain_error_when_loaded(tmp_path, folder):
    from medclf_core.registry.card import CardError
    from medclf_core.registry.store import read_card

    _registry_with_bad_cards(tmp_path)
    with pytest.raises(CardError, match=f"The model card of run '{folder}' is"):
        read_card(tmp_path / folder)
    with pytest.raises(CardError, match=BAD_CARDS[folder][1].replace("(", r"\(").replace("[", r"\[")):
        load_run(folder, tmp_path)


def test_read_card_returns_a_validated_card(tmp_path):
    from medclf_core.registry.store import read_card

    write_run_atomically(tmp_path, "good", _write)
    card = read_card(tmp_path / "good")
    assert card.name == "r" and card.schema_version == 1 and card["threshold"] is None and card["metrics"] == {}
    with pytest.raises(ModelError, match="no card.json"):
        read_card(tmp_path)


def test_cli_list_shows_unreadable_runs_without_a_traceback(tmp_path, capsys):
    from medclf_core.cli.commands import main

    _registry_with_bad_cards(tmp_path)
    assert main(["list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    lines = out.out.splitlines()
    assert lines[0].startswith("r ") and "n ?" in lines[0] and "too few test images" in lines[0]
    assert any(line.startswith("created-number") and "UNREADABLE" in line and "'created' must be" in line
               for line in lines)
    assert sum("UNREADABLE" in line for line in lines) == len(BAD_CARDS) + 2

    assert main(["list", "--models-dir", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.splitlines()[-1])
    good = [r for r in listed if not r["unreadable"]]
    bad = {r["name"]: r for r in listed if r["unreadable"]}
    assert [r["name"] for r in good] == ["r"] and good[0]["schema_version"] == 1 and good[0]["n"] is None
    assert "it has no 'name'" in bad["no-name"]["reason"] and len(bad) == len(BAD_CARDS) + 2


def test_stored_test_predictions_of_a_trained_run(trained_run):
    """Moved from jobs.run_test_predictions (issue 16): the run's own test split, every image found."""
    import os

    from medclf_core.io.atomic import read_json
    from medclf_core.registry.store import read_card, stored_test_predictions

    stored = stored_test_predictions(read_card(trained_run), read_json(trained_run, "evaluation.json"))
    assert stored["probs"].shape[1] == 2 and len(stored["y_true"]) == len(stored["files"]) > 0
    assert all(os.path.isfile(f) for f in stored["files"])
    assert stored["n_found"] == len(stored["files"])
    assert stored_test_predictions({"class_names": ["a", "b"]}, None) is None


def _stored(source: str) -> tuple[dict, dict]:
    from helpers import CHEST_SAMPLE, REPO

    rels = [p.relative_to(CHEST_SAMPLE).as_posix() for p in sorted(CHEST_SAMPLE.rglob("*.jpeg"))[::20]]
    # a card read from the registry carries its run folder: relative roots are looked for beside its models folder
    card = {"class_names": ["NORMAL", "PNEUMONIA"], "dataset": {"source": source},
            "run_dir": str(REPO / "models" / "chest-xray-pneumonia")}
    evaluation = {"split": "test", "predictions": [
        {"file": r, "label": r.split("/")[0], "probabilities": [0.3, 0.7]} for r in rels]}
    return card, evaluation


@pytest.mark.parametrize("source", ["/home/someone/medclf/samples/datasets/chest_xray",  # trained on another machine
                                    "samples/datasets/chest_xray"])                       # relative to the repository
def test_stored_test_predictions_find_the_images_on_a_fresh_clone(source, monkeypatch, tmp_path):
    """Issue 16: the recorded root of another machine (or a relative one, read from another folder) is found."""
    import os

    from helpers import CHEST_SAMPLE

    from medclf_core.registry.store import stored_test_predictions

    monkeypatch.chdir(tmp_path)
    card, evaluation = _stored(source)
    stored = stored_test_predictions(card, evaluation)
    assert stored["n_found"] == len(stored["files"]) == 4
    assert stored["dataset_root"] == str(CHEST_SAMPLE.resolve())
    assert all(os.path.isfile(f) for f in stored["files"]) and stored["dataset"] == source


def test_stored_test_predictions_say_when_the_images_are_not_here(tmp_path):
    from medclf_core.registry.store import stored_test_predictions

    card, evaluation = _stored(str(tmp_path / "gone" / "xrays"))
    stored = stored_test_predictions(card, evaluation)
    assert stored["n_found"] == 0 and stored["dataset_root"] is None
    assert len(stored["files"]) == 4 and stored["y_true"].tolist() == [0, 0, 1, 1]
