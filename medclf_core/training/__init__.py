"""Train, evaluate and register one run: the engine behind ``medclf_core train`` and the Train page.

:func:`train` does, in order: validate the settings (:meth:`TrainConfig.validate`),
scan and audit the dataset, split it without leaks, build the model (or start from an
earlier run), fit with Adam and cross-entropy (class weights when classes are
imbalanced), choose the operating threshold on the validation split, evaluate on the
test split, and write the run into the registry atomically.

One job per module:

- ``config``: :class:`TrainConfig`, its validation and the CLI metadata of its fields (no TensorFlow import);
- ``run``: the job (work folder and its lock, resume, cancel, registration);
- ``fitting``: one model's fit, phase by phase, from a :class:`~medclf_core.training.fitting.FitContext`;
- ``callbacks``: progress events and cancel, the best-epoch checkpoint, synced backups (Keras imported lazily);
- ``evaluate``: gate, temperature, threshold and test metrics of the trained model;
- ``card``: the run's :class:`medclf_core.registry.card.ModelCard`;
- ``tf_compat``: the patches over Keras internals that multi-worker training needs.

Importing this package does not import TensorFlow; :func:`train` does.

Example::

    >>> cfg = TrainConfig(data="samples/datasets/chest_xray", arch="simple_cnn", epochs=2, image_size=64)
    >>> run_dir = train(cfg, models_dir="models")        # doctest: +SKIP
"""

from medclf_core.training.config import CHEST_HINTS, TrainConfig
from medclf_core.training.fitting import class_weight_for, predict_probabilities
from medclf_core.training.run import train, work_key

__all__ = ["CHEST_HINTS", "TrainConfig", "class_weight_for", "predict_probabilities", "train", "work_key"]
