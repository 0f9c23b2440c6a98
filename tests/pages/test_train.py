"""Train page: audit before launch, launch, live progress, one job at a time, cancel, bad datasets."""

from __future__ import annotations

import time

import pytest

from helpers import rendered, server_folder

from medclf_core.training.config import ARCH_DEFAULT

LAUNCH = "FormSubmitter:train_form-Launch training"


def _poll(at, done, timeout=150.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
    raise AssertionError("timed out waiting for the Train page")


def _arch(at):
    return next(s for s in at.selectbox if s.label == "Architecture")


def _progress(at) -> int:
    bars = at.get("progress")
    return bars[0].proto.value if bars else -1


def test_audit_shows_before_launch(app_env, page):
    at = page("train")
    at.run()
    assert not at.exception
    assert [m.label for m in at.metric][:2] == ["Images", "Classes"]
    assert at.metric[0].value == "80" and at.metric[1].value == "2"
    assert "No problems found" in at.success[0].value
    counts = at.dataframe[0].value
    assert counts.to_dict() == {"all": {"NORMAL": 40, "PNEUMONIA": 40}}
    # the default is the transfer recipe on the pretrained backbone at its native size
    assert _arch(at).value == "efficientnet_lite0" and at.select_slider[0].value == ARCH_DEFAULT


def test_missing_folder_and_no_dataset_show_plain_messages(app_env, page):
    at = page("train")
    at.run()
    at.radio(key="train_source").set_value("folder")
    at.run()
    assert "Choose a dataset" in at.info[0].value
    at.button(key=LAUNCH).click()
    at.run()
    assert not at.exception and "Choose a dataset" in at.error[0].value
    at.text_input(key="train_folder").set_value("/no/such/folder")
    at.run()
    assert not at.exception
    assert "cannot be used" in at.error[0].value and "not found" in at.error[0].value


def test_test_time_flips_need_training_flips(app_env, page):
    at = page("train")
    at.run()
    assert at.checkbox(key="aug-horizontal_flip").value is False  # chest sample: no flips (laterality)
    at.checkbox(key="train_tta").check()
    at.button(key=LAUNCH).click()
    at.run()
    assert not at.exception
    assert "needs a model trained with horizontal flips" in at.error[0].value
    assert not any(s.value.startswith("Training job") for s in at.subheader)


@pytest.mark.slow
def test_launch_progress_refuse_second_and_cancel(app_env, page):
    at = page("train")
    at.run()
    _arch(at).set_value("simple_cnn")  # a model trained on images, epoch by epoch
    at.number_input[0].set_value(300)  # epochs: long enough to cancel mid-run
    at.number_input(key="train_ensemble").set_value(2)  # a seed ensemble: progress names the model
    at.select_slider[0].set_value(32)
    at.text_input[0].set_value("cancel-me")
    at.button(key=LAUNCH).click()
    at.run()
    assert not at.exception and not at.error
    assert rendered(at.subheader[0].value) == "Training job: cancel-me"

    _poll(at, lambda a: _progress(a) > 0)  # epochs and batches are moving
    assert "Training model 1 of 2: epoch" in at.get("progress")[0].proto.text

    # another tab (a new session) sees the same job and cannot launch a second one
    other = page("train")
    other.run()
    assert rendered(other.subheader[0].value) == "Training job: cancel-me"
    other.text_input[0].set_value("second")
    other.button(key=LAUNCH).click()
    other.run()
    assert "already running" in other.error[0].value and "cancel-me" in rendered(other.error[0].value)

    cancel = [b for b in at.button if b.key and b.key.startswith("cancel-")][0]
    cancel.click()
    at.run()
    _poll(at, lambda a: any("cancelled" in m.value for m in a.info), timeout=60)
    assert not at.get("progress")
    assert not (app_env.parent / "cancel-me").exists()


# ---------------------------------------------------------------------------- issue 16

def _radio(at, label):
    return next(r for r in at.radio if r.label == label)


def test_the_form_keeps_the_last_submitted_settings_in_the_session(app_env, page):
    """Issue 16: the form no longer resets: a submitted form (here one refused) comes back as submitted."""
    at = page("train")
    at.run()
    _arch(at).set_value("simple_cnn")
    at.number_input[0].set_value(7)                     # epochs
    at.select_slider[0].set_value(64)
    _radio(at, "Class weights").set_value("off")
    at.checkbox(key="train_tta").check()                # refused: the chest sample trains without flips
    at.button(key=LAUNCH).click()
    at.run()
    assert "needs a model trained with horizontal flips" in at.error[0].value
    saved = at.session_state["train_settings"]
    assert (saved["arch"], saved["epochs"], saved["image_size"], saved["class_weights"]) == ("simple_cnn", 7, 64, "off")
    again = page("train")                               # the page opened again in the same session
    again.session_state["train_settings"] = saved
    again.run()
    assert not again.exception
    assert _arch(again).value == "simple_cnn" and again.number_input[0].value == 7
    assert again.select_slider[0].value == 64 and _radio(again, "Class weights").value == "off"
    assert again.checkbox(key="train_tta").value is True  # same dataset: its choices come back too


def test_a_reload_starts_from_the_last_jobs_settings(app_env, page, tmp_path):
    """A reload is a new session: the last job's saved config (on disk) fills the form."""
    import json

    from helpers import CHEST_SAMPLE

    job = tmp_path / "jobs" / "20260101-000000-abcdef"
    job.mkdir(parents=True)
    config = {"data": str(CHEST_SAMPLE.resolve()), "arch": "simple_cnn", "epochs": 9, "batch_size": 8,
              "learning_rate": 0.002, "image_size": 96, "channels": 3, "patience": 4, "ensemble": 2,
              "augment": {"rotation": 0.05, "horizontal_flip": True}, "tta": [], "class_weights": "on"}
    (job / "config.json").write_text(json.dumps({"job_id": job.name, "config": config, "created": "2026-01-01"}))
    (job / "events.jsonl").write_text(json.dumps({"event": "error", "message": "stopped", "time": 1}) + "\n")
    at = page("train")
    at.run()
    assert not at.exception
    assert _arch(at).value == "simple_cnn" and at.number_input[0].value == 9 and at.number_input[1].value == 8
    assert at.number_input[2].value == 0.002 and at.select_slider[0].value == 96
    assert at.number_input(key="train_ensemble").value == 2 and _radio(at, "Class weights").value == "on"
    assert _radio(at, "Input").value == "colour (RGB)"  # chosen for this dataset, so kept
    assert at.checkbox(key="aug-horizontal_flip").value is True and at.checkbox(key="aug-zoom").value is False


def test_the_input_default_follows_the_datasets_images(app_env, page, tmp_path, monkeypatch):
    """Issue 16: a grayscale dataset defaults to grayscale input, a colour one to colour."""
    import numpy as np
    from PIL import Image

    from helpers import make_pattern_dataset

    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))
    grey = make_pattern_dataset(tmp_path / "grey", n_per_class=4)
    rng = np.random.default_rng(0)
    for cls in ("circle", "square"):
        (tmp_path / "colour" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "colour" / cls / f"{i}.png")
    at = server_folder(page, "train", tmp_path / "colour")
    assert not at.exception and not at.error
    assert _radio(at, "Input").value == "colour (RGB)"
    at.text_input(key="train_folder").set_value(str(grey))
    at.run()
    assert not at.exception and _radio(at, "Input").value == "grayscale"


# ---------------------------------------------------------------------------- issue 22: the form from TrainConfig

_FORM_NUMBERS = {"Epochs": "epochs", "Batch size": "batch_size", "Learning rate": "learning_rate",
                 "Fine-tuning epochs (pretrained architectures)": "fine_tune_epochs",
                 "Models to average (seed ensemble)": "ensemble", "Early-stopping patience (epochs)": "patience"}


def test_the_forms_ranges_and_choices_are_train_configs(app_env, page):
    """Every range and choice the form offers comes from TrainConfig's field metadata (as the CLI's flags do)."""
    from medclf_core.models.architectures import image_size_choices
    from medclf_core.training.config import field_choices, form_range, suggested_values

    at = page("train")
    at.run()
    assert not at.exception
    inputs = {n.label: n for n in at.number_input}
    assert set(_FORM_NUMBERS) <= set(inputs)
    for label, name in _FORM_NUMBERS.items():
        assert (inputs[label].min, inputs[label].max) == pytest.approx(form_range(name)), label
    sizes = [ARCH_DEFAULT, *image_size_choices(suggested_values("image_size"))]
    assert at.select_slider[0].options == ["native", *map(str, sizes[1:])]  # shown as format_func writes them
    assert _radio(at, "Class weights").options == list(field_choices("class_weights"))


@pytest.mark.parametrize("arch,native", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_the_image_size_defaults_to_the_chosen_architectures_native_size(app_env, page, arch, native):
    """Lite1/Lite2 train at 240/260 px unless another size is chosen: the form offers those sizes, and its
    default is "native" (TrainConfig's None, resolved for the architecture chosen), not Lite0's 224."""
    from medclf_core.training.config import TrainConfig

    at = page("train")
    at.run()
    assert str(native) in at.select_slider[0].options
    _arch(at).set_value(arch)
    at.checkbox(key="train_tta").check()                # refused after the settings are kept: nothing trains
    at.button(key=LAUNCH).click()
    at.run()
    assert not at.exception and "needs a model trained with horizontal flips" in at.error[0].value
    saved = at.session_state["train_settings"]
    assert saved["arch"] == arch and TrainConfig.from_dict(saved).resolved().image_size == native
    at.select_slider[0].set_value(260 if native == 240 else 240)  # a size chosen by hand is kept as chosen
    at.button(key=LAUNCH).click()
    at.run()
    assert at.session_state["train_settings"]["image_size"] == (260 if native == 240 else 240)


@pytest.mark.parametrize("folder,flips", [("cxr_2024", False), ("shapes", True)])
def test_the_augmentation_default_follows_trainings_chest_rule(app_env, page, tmp_path, monkeypatch, folder, flips):
    """A dataset the training's "auto" augmentation treats as chest X-rays (CHEST_HINTS, "cxr" included) gets
    the no-flip preset on the form too; any other gets flips."""
    from helpers import make_pattern_dataset

    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))
    data = make_pattern_dataset(tmp_path / folder, n_per_class=4)
    at = page("train")  # the folder chosen before the form's first run: its switches start from the preset
    at.session_state["train_source"] = "folder"
    at.session_state["train_folder"] = str(data)
    at.run()
    assert not at.exception and not at.error and at.metric[0].value == "8"
    assert at.checkbox(key="aug-horizontal_flip").value is flips
    # The chest X-ray flip caption only for chest data (it showed for CT/MRI data too).
    assert any("Horizontal flips are off by default" in c.value for c in at.caption) is not flips


# ---------------------------------------------------------------------------- issue 26

def _finished_job(jobs_root, name="tiny-done"):
    """A finished transfer-recipe job on disk: features cached, two head epochs at 10069 vectors/s, 12 test images."""
    import json

    job = jobs_root / "20260102-000000-abcdef"
    job.mkdir(parents=True)
    config = {"data": "/data/chest", "arch": "efficientnet_lite0", "epochs": 2, "name": name}
    (job / "config.json").write_text(json.dumps({"job_id": job.name, "config": config, "created": "2026-01-02"}))
    metrics = {"loss": 0.6, "accuracy": 0.6, "val_loss": 0.7, "val_accuracy": 0.5}
    events = [{"event": "start", "config": config},
              {"event": "epoch_begin", "epoch": 1, "epochs": 1, "phase": "features"},
              {"event": "epoch_begin", "epoch": 1, "epochs": 2, "phase": "train"},
              {"event": "epoch", "epoch": 1, "epochs": 2, "metrics": metrics, "images_per_s": 10069.3,
               "phase": "train"},
              {"event": "epoch", "epoch": 2, "epochs": 2, "metrics": metrics, "images_per_s": 10069.3,
               "phase": "train"},
              {"event": "done", "run_dir": str(jobs_root / "no-such-run"), "name": name,
               "metrics": {"accuracy": 1.0, "auc": 1.0, "ci95": {"accuracy": [1.0, 1.0], "auc": [1.0, 1.0]},
                           "n": 12, "split": "test"},
               "message": f"Training finished: model '{name}' is registered."}]
    (job / "events.jsonl").write_text("".join(json.dumps({**e, "time": i}) + "\n" for i, e in enumerate(events)))
    return job


def test_a_finished_job_on_few_images_says_so_names_its_speed_and_colours_its_curves(app_env, page, tmp_path):
    """Issue 26: final metrics on n = 12 without the small-n warning the Models page has; '10069 images/s' was
    the head's speed on cached features; train and validation curves shared a colour."""
    import json

    _finished_job(tmp_path / "jobs")
    at = page("train")
    at.run()
    assert not at.exception
    assert any("12 test images" in w.value and "too few for a reliable figure" in w.value for w in at.warning)
    final = at.dataframe[0].value
    assert "1.000 - 1.000" not in set(final["95% interval"])  # no interval that looks precise on 12 images
    job_line = next(c.value for c in at.caption if c.value.startswith("Job "))
    assert "10069 images/s" not in job_line and "cached backbone features: 10069 feature vectors/s" in job_line
    curves = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    colour = {t["name"]: t["line"]["color"] for t in curves if t.get("showlegend", True) is not False}
    assert set(colour) == {"train", "val"} and colour["train"] != colour["val"]


# ---------------------------------------------------------------------------- walk-through: the bundled sample

CROSS_VALIDATION = "cross-validation (out-of-fold)"


def _finished_cross_validated_job(jobs_root, run_dir):
    """A finished job on the 80-image sample with the page's defaults, as the trainer records it: one
    cross-validation 'epoch', out-of-fold figures of all 80 images, the run's card and evaluation."""
    import json

    name = "walk-sample"
    run_dir.mkdir(parents=True)
    cm = {"n": 80, "class_names": ["NORMAL", "PNEUMONIA"], "confusion_matrix": [[39, 1], [3, 37]]}
    (run_dir / "evaluation.json").write_text(json.dumps({"split": CROSS_VALIDATION, "test": cm, "val": cm,
                                                         "predictions": []}))
    (run_dir / "card.json").write_text(json.dumps({"name": name, "recipe": {"name": "transfer", "cross_validated_head": {
        "C": 0.0316, "folds": 5, "cv_log_loss": {"0.001": 0.27, "0.0316": 0.16, "1": 0.19}}}}))
    job = jobs_root / "20260102-000000-c0ffee"
    job.mkdir(parents=True)
    config = {"data": "/data/chest", "arch": "efficientnet_lite0", "epochs": 60, "name": name}
    (job / "config.json").write_text(json.dumps({"job_id": job.name, "config": config, "created": "2026-01-02"}))
    events = [{"event": "start", "config": config},
              {"event": "epoch_begin", "epoch": 1, "epochs": 1, "phase": "features"},
              {"event": "epoch", "epoch": 1, "epochs": 1, "metrics": {"cv_log_loss": 0.16}, "seconds": 0.8,
               "eta_s": 0.0, "phase": "cross_validation"},
              {"event": "split", "counts": {"train": {"NORMAL": 28, "PNEUMONIA": 28}, "val": {"NORMAL": 6,
                                                                                      "PNEUMONIA": 6},
                                            "test": {"NORMAL": 6, "PNEUMONIA": 6}}},
              {"event": "evaluate", "split": "cross-validation", "folds": 5, "n": 80},
              {"event": "notice", "message": "Out-of-distribution gate: fitted on the training split."},
              {"event": "done", "run_dir": str(run_dir), "name": name,
               "metrics": {"accuracy": 0.95, "auc": 0.986, "ci95": {"accuracy": [0.9, 0.9875]}, "n": 80,
                           "split": CROSS_VALIDATION},
               "message": f"Training finished: model '{name}' is registered."}]
    (job / "events.jsonl").write_text("".join(json.dumps({**e, "time": i}) + "\n" for i, e in enumerate(events)))


def test_the_bundled_sample_is_planned_and_reported_as_cross_validated(app_env, page, tmp_path):
    """Walk-through: after training the 80-image sample with the defaults, the accuracy and loss charts were
    empty axes (-1 to 6), the out-of-fold confusion matrix of all 80 images was titled '(test)', and the audit
    said 'medclf splits 70/15/15' though the run cross-validated on all 80 images and ignored 'Epochs 60'."""
    import json

    _finished_cross_validated_job(tmp_path / "jobs", tmp_path / "walk-sample")
    at = page("train")
    at.run()
    assert not at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [a.get("text") for c in charts for a in c["layout"].get("annotations", [])]
    assert "accuracy" not in titles and "loss" not in titles  # no empty epoch axes
    assert charts[0]["layout"]["xaxis"]["type"] == "log" and charts[0]["data"][0]["y"] == [0.27, 0.16, 0.19]
    assert any("5-fold cross-validation" in c.value and "no accuracy or loss curves" in c.value for c in at.caption)
    assert any(m.value == "**Final metrics** (out-of-fold predictions of all 80 images)" for m in at.markdown)
    assert charts[1]["layout"]["title"]["text"] == "Confusion matrix (out-of-fold predictions of all 80 images)"
    # the audit, before training: the recipe this data size gets, computed by the trainer's rule
    assert not any("medclf splits 70/15/15" in m.value for m in at.markdown)
    plan = next(i.value for i in at.info if "fewer than 400" in i.value)
    assert "fitted on all 80 images" in plan and "5-fold cross-validation" in plan
    assert "Epochs, Learning rate and Early-stopping patience settings do not apply" in plan
    # the split table (56/12/12) is not where its figures come from: it only fits the out-of-distribution check
    split = next(m.value.replace("\\", "") for m in at.markdown if m.value.startswith("Images per split"))
    assert "use all 80 images (5-fold cross-validation" in split and "out-of-distribution check" in split
