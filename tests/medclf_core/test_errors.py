"""errors: third-party exception text never reaches a user whole; the full detail goes to the log."""

from __future__ import annotations

import logging

from medclf_core.errors import MAX_DETAIL, MAX_MESSAGE, DatasetError, ModelError, brief, user_message

KERAS_REFUSAL = ("Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda. "
                 "This carries a potential risk of arbitrary code execution ... /srv/models/run/model.keras\n"
                 + "  File details: " + "x" * 3000)


def test_brief_is_one_bounded_line_without_server_paths(caplog):
    with caplog.at_level(logging.WARNING, logger="medclf"):
        text = brief(ValueError(KERAS_REFUSAL))
    assert text.startswith("ValueError: Requested the deserialization")
    assert len(text) <= MAX_DETAIL and "\n" not in text
    assert "/srv/models" not in text
    assert "x" * 3000 in caplog.text  # the whole refusal is in the server log


def test_os_errors_give_their_reason_not_the_path():
    assert brief(PermissionError(13, "Permission denied", "/proc/1/cwd")) == "PermissionError: Permission denied"
    assert brief(FileNotFoundError(2, "No such file or directory", "/home/a/b")) == \
        "FileNotFoundError: No such file or directory"
    assert "/data/x.h5" not in brief(OSError("Unable to open file (name = '/data/x.h5', errno = 2)"))


def test_user_message_keeps_medclf_messages_and_hides_the_rest(caplog):
    assert user_message(DatasetError("The folder has no class folders.")) == "The folder has no class folders."
    assert len(user_message(ModelError("y" * 5000))) <= MAX_MESSAGE
    with caplog.at_level(logging.ERROR, logger="medclf"):
        shown = user_message(ValueError(KERAS_REFUSAL), "The model cannot be loaded")
    assert shown.startswith("The model cannot be loaded (ValueError: ") and shown.endswith(").")
    assert len(shown) <= MAX_DETAIL + len("The model cannot be loaded (). ")
    assert "Traceback" not in shown and "/srv/" not in shown
    assert "x" * 3000 in caplog.text


def test_an_exception_without_text_names_its_type():
    assert user_message(KeyError(), "The card cannot be read") == "The card cannot be read (KeyError)."
    assert brief(RuntimeError("")) == "RuntimeError"


def test_urls_survive_path_scrubbing():
    assert "https://keras.io/api" in brief(ValueError("see https://keras.io/api for details"))


def test_a_keras_refusal_reaches_the_user_as_one_short_line(tmp_path, caplog):
    """Issue 17 item 13: Keras' 3 KB "could not locate class ... Full object config: {...}" refusal."""
    import json
    import zipfile

    import pytest

    from medclf_core.registry.store import load_model_file

    layer = {"module": "evil.module", "class_name": "NoSuchLayer" + "x" * 2000, "config": {"name": "l" * 1000},
             "registered_name": None, "name": "bad", "inbound_nodes": []}
    image = {"module": "keras.layers", "class_name": "InputLayer", "name": "image", "inbound_nodes": [],
             "config": {"batch_shape": [None, 8, 8, 1], "name": "image"}}  # within the limits: Keras reads it
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": None,
              "config": {"name": "m", "layers": [image, layer], "input_layers": [], "output_layers": []}}
    path = tmp_path / "hostile.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        z.writestr("model.weights.h5", b"")
    with caplog.at_level(logging.WARNING, logger="medclf"), pytest.raises(ModelError) as info:
        load_model_file(path)
    shown = str(info.value)
    assert shown.startswith("The model file is damaged or not a Keras model (")
    assert len(shown) < 300 and "Full object config" not in shown and "x" * 200 not in shown
    assert "Full object config" in caplog.text  # the detail is in the server log


def test_a_private_api_is_found_or_its_absence_is_logged_once(caplog, monkeypatch):
    from medclf_core import errors

    monkeypatch.setattr(errors, "_missing_apis_reported", set())
    log = logging.getLogger("medclf.test")
    assert errors.private_attribute(log, "Lib", "json.decoder", "JSONDecoder", "x") is __import__("json").JSONDecoder
    with caplog.at_level(logging.WARNING, logger="medclf.test"):
        for _ in range(2):
            assert errors.private_attribute(log, "Lib", "json.decoder", "_gone", "slower") is None
            assert errors.private_attribute(log, "Lib", "no_such_module_xyz", "x", "slower") is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Lib compatibility: decoder._gone is missing in this Lib version; slower",
                        "Lib compatibility: no_such_module_xyz is missing in this Lib version; slower"]
