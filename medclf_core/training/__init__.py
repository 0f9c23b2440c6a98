"""Train, evaluate and register one run: the engine behind ``medclf_core train`` and the Train page.

:func:`train` does, in order: validate the settings (:meth:`TrainConfig.validate`),
scan and audit the dataset, split it without leaks, build the model (or start from an
earlier run), fit with Adam and cross-entropy (class weights when classes are
imbalanced), choose the operating threshold on the validation split, evaluate on the
test split, and write the run into the registry atomically.

One job per module:

- ``config``: :class:`TrainConfig`, its validation (once per path: a stamp) and the metadata of its
  fields, from which the CLI makes its flags and the Train page its form (no TensorFlow import);
- ``session``: :class:`~medclf_core.training.session.TrainingSession`, one run's state from validated
  settings to registration (devices, data and split, work folder and its lock, results);
- ``run``: the job, step by step on the session (fit, evaluate, register; cancel and errors as events);
- ``fitting``: one model's fit, phase by phase; ``head_phase``: the transfer recipe's head on cached
  features (held-out, or cross-validated on few images); ``labels``: items' labels and class weights;
- ``callbacks``: progress events and cancel, the best-epoch checkpoint, synced backups (Keras imported lazily);
- ``evaluate``: gate, temperature, threshold and test metrics of the trained model (and its predictions);
- ``card``: the run's :class:`medclf_core.registry.card.ModelCard`;
- ``refit``: the gate and the temperature of a registered run, refitted without retraining;
- ``jobs`` and ``events``: background jobs for the app, and a run's progress as events (the job's one record);
- ``devices``: the device plan (strategy, precision, XLA);
- ``tf_compat``: every patch over Keras/TensorFlow internals, each named, warned about and tested.

May import every lower layer (errors, io, data, models, registry, trust, explain, inference), never
reports, server or cli. Importing this package does not import TensorFlow; :func:`train` does.

Example::

    >>> cfg = TrainConfig(data="samples/datasets/chest_xray", arch="simple_cnn", epochs=2, image_size=64)
    >>> run_dir = train(cfg, models_dir="models")        # doctest: +SKIP
"""

from medclf_core.training.config import CHEST_HINTS, TrainConfig
from medclf_core.training.evaluate import predict_probabilities
from medclf_core.training.labels import class_weight_for
from medclf_core.training.run import train
from medclf_core.training.session import work_key

__all__ = ["CHEST_HINTS", "TrainConfig", "class_weight_for", "predict_probabilities", "train", "work_key"]
