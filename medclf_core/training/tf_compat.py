"""Every patch over Keras/TensorFlow internals that training relies on (written against Keras 3.15, TensorFlow backend).

Each function names the Keras behaviour it works around. Where the private API it needs is
gone (another Keras version) it changes nothing and logs a WARNING once per process, saying
what the run loses. ``tests/medclf_core/training/test_tf_compat.py`` checks each private API
against the installed Keras, so an upgrade that removes or changes one fails there: then
update or delete the patch (and run ``tests/medclf_core/training/test_distributed.py``,
which trains two local workers, for the multi-worker ones).

- :func:`forget_restored_epoch`: a second ``fit`` of a model (fine-tuning) starts where it says;
- :func:`synced_backup`: ``BackupAndRestore`` whose workers agree on the epoch they resume from;
- :func:`fix_symbolic_build_for_multi_worker` and :func:`fix_reduce_per_replica_for_multi_worker`:
  ``fit`` under MultiWorkerMirroredStrategy (applied only to runs that use it).

Keras and TensorFlow are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

from medclf_core.errors import private_attribute, warn_missing_api
from medclf_core.training.devices import gather_min

log = logging.getLogger(__name__)


def _warn_once(what: str, consequence: str) -> None:
    warn_missing_api(log, "Keras", what, consequence)

#: The private attributes of ``keras.callbacks.BackupAndRestore`` that :func:`synced_backup` reads.
BACKUP_PATHS = ("_weights_path", "_training_metadata_path", "_prev_weights_path", "_prev_training_metadata_path")



def forget_restored_epoch(model) -> bool:
    """Let the model's next ``fit`` start at its ``initial_epoch`` argument. Returns whether it could.

    Works around Keras 3.15 ``BackupAndRestore._load_model``, which sets ``model._initial_epoch``
    to the epoch it restored, and ``TensorFlowTrainer.fit``, which starts at
    ``self._initial_epoch or initial_epoch`` in every later ``fit`` of the same model too. A
    resumed run's fine-tuning phase is such a later ``fit``: without this, it starts at the
    first phase's restored epoch instead of after the epochs already in its history.
    """
    if not hasattr(model, "_initial_epoch"):
        _warn_once("Model._initial_epoch", "a resumed run's fine-tuning may start at the wrong epoch")
        return False
    model._initial_epoch = None
    return True


def synced_backup(backup_dir: Path, multi_worker: bool):
    """Keras ``BackupAndRestore``; with several workers, all of them resume from the same epoch.

    Every worker backs up into its own folder (Keras 3 writes from every worker). A
    worker killed between the end of an epoch and its backup write can be one epoch
    behind the others, so with several workers the previous state is kept too, and
    at restore time the workers agree on the oldest epoch any of them holds (a
    collective all-gather) and roll back to it. Weights are identical on every
    worker at the end of an epoch (synchronous training), so this is exact.

    Works around Keras 3.15 ``BackupAndRestore``, which restores each worker from its own
    last backup. Overrides its private ``_load_model`` and reads its private file paths
    (:data:`BACKUP_PATHS`); where they are gone, the plain callback is used (a warning says
    that a killed worker may then resume the cluster from different epochs).
    """
    import keras

    base = keras.callbacks.BackupAndRestore
    if multi_worker and not _backup_internals_present(base, backup_dir):
        return base(str(backup_dir), double_checkpoint=True)

    class SyncedBackupAndRestore(base):
        def _load_model(self):
            if multi_worker:
                self._agree_on_epoch()
            super()._load_model()

        def _agree_on_epoch(self):
            local = _backup_epoch(self._training_metadata_path, self._weights_path)
            agreed = gather_min(self.model.distribute_strategy, local)
            if agreed == local:
                return
            prev = _backup_epoch(self._prev_training_metadata_path, self._prev_weights_path)
            if agreed > 0 and prev == agreed:
                shutil.copyfile(self._prev_weights_path, self._weights_path)
                shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
            else:  # nothing common: every worker starts over
                for f in (self._weights_path, self._training_metadata_path, self._prev_weights_path,
                          self._prev_training_metadata_path):
                    with contextlib.suppress(OSError):
                        os.remove(f)

    return SyncedBackupAndRestore(str(backup_dir), double_checkpoint=multi_worker)


def _backup_internals_present(base: type, backup_dir: Path) -> bool:
    probe = base(str(backup_dir), double_checkpoint=True)
    missing = [name for name in ("_load_model", *BACKUP_PATHS) if not hasattr(probe, name)]
    if missing:
        _warn_once(f"BackupAndRestore.{missing[0]}",
                   "a killed worker may resume the cluster from a different epoch than the others")
    return not missing


def _backup_epoch(metadata_path, weights_path) -> int:
    try:
        if not os.path.isfile(weights_path):
            return 0
        with open(metadata_path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def fix_symbolic_build_for_multi_worker(model) -> bool:
    """Work around Keras 3.15 + MultiWorkerMirroredStrategy: ``fit`` fails at its first step. Returns whether
    the patch is in place.

    ``TensorFlowTrainer._maybe_symbolic_build`` averages one sample batch with
    ``strategy.reduce("MEAN", (x, y, ...), axis=None)``; MultiWorkerMirroredStrategy's
    reduce accepts one value, not a tuple, and raises "Attempt to convert a value
    (PerReplica...) to a Tensor". The batch is only used for its shapes and dtypes, so
    this worker's own first replica batch does the same job without a cross-worker op.
    """
    import types

    import tensorflow as tf

    try:
        from keras.src import tree
    except ImportError:
        _warn_once("keras.src.tree", "multi-worker training may fail at its first step")
        return False
    if not hasattr(model, "_maybe_symbolic_build") or not hasattr(model, "_symbolic_build"):
        _warn_once("Trainer._maybe_symbolic_build", "multi-worker training may fail at its first step")
        return False

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    return fix_reduce_per_replica_for_multi_worker()


def fix_reduce_per_replica_for_multi_worker() -> bool:
    """Work around Keras 3.15 + MultiWorkerMirroredStrategy: the train step fails to trace. Returns whether
    the patch is in place.

    ``reduce_per_replica(..., reduction="auto")`` averages the step's outputs (scalar loss
    and metrics) with ``strategy.reduce("MEAN", v, axis=0)``, which is invalid for a
    0-d tensor ("Invalid reduction dimension 0 for input with 0 dimensions"). Averaging
    across replicas (``axis=None``) is the intended result. Patched only in processes
    that train with MultiWorkerMirroredStrategy; every other strategy keeps Keras' code.
    """
    import tensorflow as tf

    original = private_attribute(log, "Keras", "keras.src.backend.tensorflow.trainer", "reduce_per_replica",
                                 "multi-worker training may fail to trace its step")
    if original is None:
        return False
    from keras.src import tree  # present wherever that trainer module is (Keras 3)
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(original, "_medclf_fixed", False):
        return True

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._medclf_fixed = True
    tf_trainer.reduce_per_replica = reduce_per_replica
    return True
