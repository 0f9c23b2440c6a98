"""medclf_core.training.tf_compat: each patch against the installed Keras, so an upgrade that removes or changes
a private API it relies on fails here (not silently in a resumed or multi-worker run)."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest

from medclf_core import errors
from medclf_core.training import tf_compat


def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def _epochs_run(model, **fit) -> int:
    x, y = np.zeros((4, 2), "float32"), np.array([0, 1, 0, 1])
    return len(model.fit(x, y, batch_size=2, verbose=0, **fit).history["loss"])


def test_a_restored_epoch_overrides_the_next_fits_initial_epoch_until_forgotten():
    """The behaviour forget_restored_epoch works around, on a real Keras model: the private attribute is still
    there and still wins over ``initial_epoch`` (if Keras stops doing this, delete the patch)."""
    import keras

    model = _tiny_model()
    assert hasattr(model, "_initial_epoch")
    assert "self._initial_epoch" in inspect.getsource(type(model).fit)
    assert "_initial_epoch" in inspect.getsource(keras.callbacks.BackupAndRestore._load_model)
    model._initial_epoch = 2  # what BackupAndRestore leaves after restoring epoch 2 of a first phase
    assert _epochs_run(model, epochs=3, initial_epoch=0) == 1
    assert tf_compat.forget_restored_epoch(model) is True
    assert _epochs_run(model, epochs=3, initial_epoch=0) == 3


def test_backup_and_restore_still_has_the_internals_synced_backup_overrides(tmp_path):
    import keras

    real = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), double_checkpoint=True)
    for name in ("_load_model", *tf_compat.BACKUP_PATHS):
        assert hasattr(real, name), name
    assert callable(real._load_model)
    synced = tf_compat.synced_backup(tmp_path / "s", multi_worker=True)
    assert type(synced).__name__ == "SyncedBackupAndRestore" and isinstance(synced, keras.callbacks.BackupAndRestore)
    # the epoch a backup holds is read from the files Keras writes at the end of an epoch
    synced.set_model(_tiny_model())
    assert tf_compat._backup_epoch(synced._training_metadata_path, synced._weights_path) == 0
    synced.on_epoch_end(2)
    assert tf_compat._backup_epoch(synced._training_metadata_path, synced._weights_path) == 3


def test_the_multi_worker_patches_find_the_keras_internals_they_replace():
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    assert callable(tree.map_structure)
    assert list(inspect.signature(tf_trainer.reduce_per_replica).parameters) == ["values", "strategy", "reduction"]
    model = _tiny_model()
    params = inspect.signature(model._maybe_symbolic_build).parameters
    assert list(params) == ["iterator", "data_batch"] and hasattr(model, "_symbolic_build")
    assert tf_compat.fix_symbolic_build_for_multi_worker(model) is True
    assert getattr(tf_trainer.reduce_per_replica, "_medclf_fixed", False)


def test_a_missing_private_api_is_a_warning_not_a_silent_no_op(caplog, monkeypatch):
    monkeypatch.setattr(errors, "_missing_apis_reported", set())

    class NotAKerasModel:
        pass

    with caplog.at_level(logging.WARNING, logger=tf_compat.__name__):
        assert tf_compat.forget_restored_epoch(NotAKerasModel()) is False
        assert tf_compat.fix_symbolic_build_for_multi_worker(NotAKerasModel()) is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("_initial_epoch is missing" in m and "fine-tuning" in m for m in messages), messages
    assert any("_maybe_symbolic_build is missing" in m for m in messages), messages


@pytest.mark.parametrize("multi_worker", [False, True])
def test_synced_backup_is_a_backup_and_restore(tmp_path, multi_worker):
    import keras

    cb = tf_compat.synced_backup(tmp_path / "b", multi_worker)
    assert isinstance(cb, keras.callbacks.BackupAndRestore) and cb.double_checkpoint is multi_worker
