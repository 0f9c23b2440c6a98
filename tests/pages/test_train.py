"""Train page: audit before launch, launch, live progress, one job at a time, cancel, bad datasets."""

from __future__ import annotations

import time

import pytest

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
    assert _arch(at).value == "efficientnet_lite0" and at.select_slider[0].value == 224


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
    assert at.subheader[0].value == "Training job: cancel-me"

    _poll(at, lambda a: _progress(a) > 0)  # epochs and batches are moving
    assert "Training model 1 of 2: epoch" in at.get("progress")[0].proto.text

    # another tab (a new session) sees the same job and cannot launch a second one
    other = page("train")
    other.run()
    assert other.subheader[0].value == "Training job: cancel-me"
    other.text_input[0].set_value("second")
    other.button(key=LAUNCH).click()
    other.run()
    assert "already running" in other.error[0].value and "cancel-me" in other.error[0].value

    cancel = [b for b in at.button if b.key and b.key.startswith("cancel-")][0]
    cancel.click()
    at.run()
    _poll(at, lambda a: any("cancelled" in m.value for m in a.info), timeout=60)
    assert not at.get("progress")
    assert not (app_env.parent / "cancel-me").exists()
