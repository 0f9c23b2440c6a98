"""The Keras callbacks of a run: progress events and cancel, the best-epoch checkpoint, clean BatchNorm statistics.

The backup callback that subclasses Keras internals is :func:`medclf_core.training.tf_compat.synced_backup`.

Keras is imported when the first callback is made, not when this module is imported:
each callback is a plain class here, and :meth:`_KerasCallback.new` mixes
``keras.callbacks.Callback`` in at construction.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medclf_core.errors import TrainingCancelled
from medclf_core.training.events import EventLog
from medclf_core.io.atomic import write_json


@functools.cache
def _with_keras_base(cls: type) -> type:
    import keras

    return type(cls.__name__, (cls, keras.callbacks.Callback), {"__doc__": cls.__doc__})


class _KerasCallback:
    """Base of medclf's callbacks; make them with ``new(...)``, which adds the Keras base class."""

    @classmethod
    def new(cls, *args, **kwargs):
        return _with_keras_base(cls)(*args, **kwargs)


class Progress(_KerasCallback):
    """Emits batch/epoch events with ETA, keeps history across resumes, honours cancel."""

    def __init__(self, log: EventLog, epochs: int, steps: int, history_path: Path,
                 cancel: Callable[[], bool] | None, phase: str, batch_interval_s: float = 0.5,
                 n_train: int = 0, member: int = 1, members: int = 1):
        super().__init__()
        self.log, self.epochs, self.steps, self.n_train = log, epochs, steps, n_train
        # ensemble members train one after the other: events say which, ETAs include the members to come
        self.member_info = {"member": member, "members": members} if members > 1 else {}
        self.later_members = members - member
        self.history_path, self.cancel, self.phase = history_path, cancel, phase
        self.batch_interval_s = batch_interval_s
        self.history: list[dict] = json.loads(history_path.read_text()) if history_path.is_file() else []
        self._first_epoch: int | None = None
        self._epoch_times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
            self.history = [h for h in self.history if h["epoch"] < epoch]
            if epoch > 0 and self.phase == "train":
                self.log.emit("resumed", epoch=epoch + 1, epochs=self.epochs)
        self._epoch, self._t0, self._last = epoch, time.time(), 0.0
        self._t_train_end = None
        self.log.emit("epoch_begin", epoch=epoch + 1, epochs=self.epochs, phase=self.phase, **self.member_info)

    def on_train_batch_end(self, batch, logs=None):
        if self.cancel is not None and self.cancel():
            raise TrainingCancelled("Training was cancelled.")
        now = time.time()
        self._t_train_end = now
        if now - self._last >= self.batch_interval_s or batch + 1 == self.steps:
            self._last = now
            per_batch = (now - self._t0) / (batch + 1)
            remaining_epochs = self.epochs - self._epoch - 1
            epoch_s = np.median(self._epoch_times) if self._epoch_times else per_batch * self.steps
            eta = per_batch * (self.steps - batch - 1) + (remaining_epochs + self.later_members * self.epochs) * epoch_s
            self.log.emit("batch", epoch=self._epoch + 1, epochs=self.epochs, batch=batch + 1, batches=self.steps,
                          metrics=clean_logs(logs), eta_s=round(float(eta), 1), phase=self.phase, **self.member_info)

    def on_epoch_end(self, epoch, logs=None):
        took = time.time() - self._t0
        self._epoch_times.append(took)
        # training throughput: images of the whole train split (all workers) over the fit part of the epoch
        fit_s = (self._t_train_end or time.time()) - self._t0
        ips = round(self.n_train / fit_s, 1) if self.n_train and fit_s > 0 else None
        lr = self.model.optimizer.learning_rate
        record = {"epoch": epoch, **clean_logs(logs), "learning_rate": float(np.asarray(lr)),
                  "seconds": round(took, 2), "phase": self.phase, "images_per_s": ips}
        self.history.append(record)
        write_json(self.history_path, self.history)
        eta = (self.epochs - epoch - 1 + self.later_members * self.epochs) * float(np.median(self._epoch_times))
        self.log.emit("epoch", epoch=epoch + 1, epochs=self.epochs, metrics=clean_logs(logs), seconds=round(took, 2),
                      eta_s=round(eta, 1), phase=self.phase, images_per_s=ips, **self.member_info)


class BestCheckpoint(_KerasCallback):
    """Saves weights when val_loss improves; remembers the best across resumes (unlike ModelCheckpoint)."""

    def __init__(self, work: Path):
        super().__init__()
        self.weights_path = work / "best.weights.h5"
        self.state_path = work / "best.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.best = state.get("val_loss", np.inf)
        self.best_epoch = state.get("epoch")

    def on_epoch_end(self, epoch, logs=None):
        val = (logs or {}).get("val_loss")
        if val is not None and np.isfinite(val) and val < self.best:
            self.record(self.model, val, epoch)

    def record(self, model, val_loss: float | None, epoch: int) -> None:
        """Save ``model``'s weights as the best so far (the transfer recipe calls this after its head)."""
        self.best, self.best_epoch = (float(val_loss) if val_loss is not None else np.inf), epoch
        tmp = self.weights_path.with_name(".tmp.best.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, self.weights_path)
        write_json(self.state_path, {"val_loss": val_loss, "epoch": epoch})


class CleanBatchNormStatistics(_KerasCallback):
    """Before each validation, set every trainable BatchNorm layer's moving statistics to those of the
    current weights on unaugmented training images (precise BatchNorm, Wu & Johnson 2021, on clean inputs).

    During ``fit`` the moving averages follow the last ~10 augmented batches, seen with older weights.
    Augmentation (resampling, zero-filled borders) makes those batches unlike the real images, and the
    model is validated, checkpointed and saved with the moving statistics. On an easy task (issue 15) that
    swung validation accuracy between 1.0 and 0.5 from one epoch to the next while the same weights with
    batch statistics, or with these statistics, scored 1.0 at every epoch
    (``tests/medclf_core/training/test_repeatability.py``). Layers that are not trainable (``freeze_batchnorm``,
    fine-tuning with frozen BatchNorm, frozen pretrained trunks) keep their statistics.
    """

    def __init__(self, images_ds):
        super().__init__()
        self.images_ds = images_ds

    def on_test_begin(self, logs=None):
        import keras

        layers = [layer for layer in self.model.layers
                  if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        if layers:
            set_batchnorm_statistics(self.model, layers, self.images_ds)


def set_batchnorm_statistics(model, layers: list, images_ds) -> None:
    """Set ``layers``' moving mean and variance to the average batch statistics of their inputs over ``images_ds``.

    The forward pass runs in training mode (each layer normalises by its batch, as in training), so
    each layer's statistics are those its inputs have when it is trained; Keras' own moving-average
    update in that pass is overwritten. The estimate is the mean of the per-batch means and variances,
    the quantity Keras' momentum average approximates.
    """
    import keras
    from keras import ops

    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    sums, batches = None, 0
    for images, _ in images_ds:
        outputs = probe(images, training=True)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        stats = []
        for out in outputs:
            out = ops.cast(out, "float32")
            axes = tuple(range(len(out.shape) - 1))
            stats.append((ops.mean(out, axis=axes), ops.var(out, axis=axes)))
        sums = stats if sums is None else [(m0 + m, v0 + v) for (m0, v0), (m, v) in zip(sums, stats, strict=True)]
        batches += 1
    if not batches:
        return
    for layer, (mean, var) in zip(layers, sums, strict=True):
        layer.moving_mean.assign(ops.cast(mean / batches, layer.moving_mean.dtype))
        layer.moving_variance.assign(ops.cast(var / batches, layer.moving_variance.dtype))


def clean_logs(logs) -> dict:
    """Keras' epoch/batch logs as plain rounded floats (scalars only), ready for JSON.

    >>> clean_logs({"loss": 0.12345678, "per_class": [1, 2]})
    {'loss': 0.123457}
    """
    return {k: round(float(v), 6) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}
