"""Patches over Keras internals that MultiWorkerMirroredStrategy training needs (Keras 3.15, TensorFlow backend).

Each function names the Keras bug it works around. They are applied only when a run
trains with MultiWorkerMirroredStrategy (``plan.kind == "multi_worker"``); every other
strategy keeps Keras' own code. When Keras fixes them upstream, delete the patch and
run ``tests/medclf_core/training/test_distributed.py``, which trains two local workers.
"""

from __future__ import annotations


def fix_symbolic_build_for_multi_worker(model) -> None:
    """Work around Keras 3.15 + MultiWorkerMirroredStrategy: ``fit`` fails at its first step.

    ``TensorFlowTrainer._maybe_symbolic_build`` averages one sample batch with
    ``strategy.reduce("MEAN", (x, y, ...), axis=None)``; MultiWorkerMirroredStrategy's
    reduce accepts one value, not a tuple, and raises "Attempt to convert a value
    (PerReplica...) to a Tensor". The batch is only used for its shapes and dtypes, so
    this worker's own first replica batch does the same job without a cross-worker op.
    """
    import types

    import tensorflow as tf
    from keras.src import tree

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
    fix_reduce_per_replica_for_multi_worker()


def fix_reduce_per_replica_for_multi_worker() -> None:
    """Work around Keras 3.15 + MultiWorkerMirroredStrategy: the train step fails to trace.

    ``reduce_per_replica(..., reduction="auto")`` averages the step's outputs (scalar loss
    and metrics) with ``strategy.reduce("MEAN", v, axis=0)``, which is invalid for a
    0-d tensor ("Invalid reduction dimension 0 for input with 0 dimensions"). Averaging
    across replicas (``axis=None``) is the intended result. Patched only in processes
    that train with MultiWorkerMirroredStrategy; every other strategy keeps Keras' code.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_medclf_fixed", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._medclf_fixed = True
    tf_trainer.reduce_per_replica = reduce_per_replica
