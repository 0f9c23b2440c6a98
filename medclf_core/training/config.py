"""What defines a run: :class:`TrainConfig`, and :meth:`TrainConfig.validate`, the one check of its settings.

A setting is refused with the same plain message wherever it comes from (the CLI, the Train page's
job launcher :func:`medclf_core.training.jobs.start_job`, a config file), before any work starts.
Validation runs once per path: :meth:`TrainConfig.validate` stamps the config it passed, and
:func:`medclf_core.training.train` validates only a config without a current stamp
(:meth:`TrainConfig.is_validated`; changing a setting after validation voids it). A job's worker reads
its config from disk and trusts it only when it still matches the stamp :func:`start_job` wrote
(:meth:`TrainConfig.trust_stamp`).

Each field's ``metadata`` holds its help text and choices, and for the settings the Train page offers,
the form's range (``min``, ``max``) and suggested values; the CLI generates its ``train`` flags from them
(:func:`train_fields`) and the Train page its form (:func:`form_range`, :func:`suggested_values`,
:func:`choices_of`, :func:`auto_augment_preset`).

Importing this module does not import TensorFlow or Keras: the app and the CLI can build and check a
configuration without paying for them.

Example::

    >>> cfg = TrainConfig(data=".", arch="simple_cnn", epochs=2, image_size=64)
    >>> cfg.validate() is cfg and cfg.is_validated()
    True
    >>> cfg.epochs = 3          # a change after validation voids it
    >>> cfg.is_validated()
    False
    >>> cfg.resolved().batch_size        # None means "the architecture's default"
    32
    >>> TrainConfig(data=".", augment="chest_xray", tta=["hflip"]).validate()
    Traceback (most recent call last):
    ...
    medclf_core.errors.MedclfError: Test-time 'hflip' needs a model trained with horizontal flips (this augmentation has them off, as for chest X-rays where flips change laterality).
    >>> TrainConfig.from_dict({"data": ".", "colour": 1})
    Traceback (most recent call last):
    ...
    medclf_core.errors.MedclfError: Unknown training option(s): colour.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from medclf_core.models.architectures import ARCHITECTURES, RECIPES, get_architecture
from medclf_core.data.augment import PRESETS, AugmentConfig
from medclf_core.training.crossfit import SMALL_DATA_IMAGES
from medclf_core.training.devices import DISTRIBUTE_CHOICES, MIXED_PRECISION_CHOICES, XLA_CHOICES
from medclf_core.errors import DatasetError, MedclfError
from medclf_core.registry.store import default_models_dir
from medclf_core.trust.ood import REFUSE_FACTOR, refuse_factor_problem

CHEST_HINTS = ("chest", "xray", "x-ray", "cxr", "pneumonia")
CLASS_WEIGHT_MODES = ("auto", "on", "off")
AUGMENT_CHOICES = ("auto", *PRESETS)
# Keys a config file may carry for its readers; they are not settings.
DOC_KEYS = ("comment", "description")
# fine_tune_learning_rate's default where the architecture fine-tunes on cached activations (training/top_tuning.py):
# bench/finetune.py's rate for the top blocks' convolutions
CACHED_FINE_TUNE_LR = 2e-4


def _threshold_methods() -> tuple[str, ...]:
    from medclf_core.trust.metrics import THRESHOLD_METHODS  # scikit-learn: imported only when asked

    return tuple(THRESHOLD_METHODS)


def _opt(default=MISSING, help: str = "", *, label: str | None = None,
         choices: tuple | Callable[[], tuple] | None = None, flag: str | None = None, cli: bool = True,
         metavar: str | None = None, default_text: str | None = None, factory=None,
         min=None, max=None, suggested: tuple | None = None):
    """A field with the metadata the CLI, the Train page and :meth:`TrainConfig.validate` read.

    ``choices`` (a tuple, or a function returning one, for constants whose module is costly to import);
    ``flag``: the CLI flag when it is not the field name; ``cli=False``: config files only;
    ``default_text``: how the help states a ``None`` default; ``label``: the setting's name in messages;
    ``min``/``max``: the range the Train page's form offers (not refused beyond it by validation: the CLI
    and config files may go further, e.g. a learning rate of 0 freezes a phase); ``suggested``: the
    values the form offers for a setting it shows as a slider.
    """
    meta = {"help": help, "choices": choices, "flag": flag, "cli": cli, "metavar": metavar,
            "default_text": default_text, "label": label, "min": min, "max": max, "suggested": suggested}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


ARCH_DEFAULT = "the architecture's"


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means "the architecture's default"."""

    data: str = _opt(help="dataset folder or .zip (or give it in --config)")
    arch: str = _opt("simple_cnn", "architecture", label="architecture", choices=tuple(ARCHITECTURES))
    name: str | None = _opt(None, "run name", default_text="<dataset>-<arch>")
    task: str | None = _opt(None, "task description stored in the model card", default_text="the dataset name")
    epochs: int | None = _opt(None, "maximum epochs (early stopping may end sooner)", default_text=ARCH_DEFAULT,
                              min=1, max=500)
    image_size: int | None = _opt(None, "input side in pixels", default_text=ARCH_DEFAULT,
                                  suggested=(32, 48, 64, 96, 128, 160, 192, 224, 256, 299, 320))
    channels: int | None = _opt(None, "1 = grayscale, 3 = RGB", choices=(1, 3), default_text=ARCH_DEFAULT)
    batch_size: int | None = _opt(None, "batch size per device", default_text=ARCH_DEFAULT, min=1, max=512)
    learning_rate: float | None = _opt(None, "Adam learning rate", flag="lr", default_text=ARCH_DEFAULT,
                                       min=1e-6, max=1.0)
    val_split: float = _opt(0.15, "validation fraction")
    test_split: float = _opt(0.15, "test fraction")
    seed: int = _opt(1337, "random seed for split, initialisation and augmentation")
    augment: str | dict = _opt("auto", "augmentation preset (a config file may give a dict of settings); auto = "
                                       "chest_xray (no flips) for chest data, else default",
                               label="augmentation preset", choices=AUGMENT_CHOICES)
    class_weights: str = _opt("auto", "class weights; auto: on when the classes are imbalanced (1.5:1 or more)",
                              choices=CLASS_WEIGHT_MODES)
    patience: int = _opt(8, "early-stopping patience in epochs (without validation-loss improvement)", min=1, max=100)
    lr_patience: int = _opt(3, "ReduceLROnPlateau patience in epochs")
    threshold_method: str = _opt("balanced", "how the binary operating threshold is chosen on validation data "
                                             "(balanced: bootstrap-median Youden)", choices=_threshold_methods)
    target_sensitivity: float = _opt(0.95, "for --threshold-method sensitivity")
    init_from: str | None = _opt(None, "start from an earlier run (name or folder): fine-tuning")
    weights: str | None = _opt("imagenet", "pretrained architectures: 'imagenet' (efficientnet_lite0: the pinned "
                                           "package, offline; resnet50: download or $MEDCLF_RESNET50_WEIGHTS), a "
                                           "local weights file, or 'none'")
    recipe: str = _opt("auto", "auto: transfer for a pretrained backbone (a head on cached features), else scratch "
                               "(fit on images)", choices=RECIPES)
    feature_views: int = _opt(2, "transfer: random augmented views of each training image to cache")
    small_data_images: int = _opt(SMALL_DATA_IMAGES, "transfer: below this many labelled images the head is "
                                                        "fitted on all of them, its L2 strength chosen by "
                                                        "cross-validation, figures out-of-fold (training/"
                                                        "crossfit.py says why); 0: always hold out val/test")
    fine_tune_epochs: int | None = _opt(None, "pretrained architectures: at most this many epochs after the head, "
                                              "top blocks unfrozen, BatchNorm frozen (efficientnet_lite0: on "
                                              "activations cached with the features)", default_text=ARCH_DEFAULT,
                                    min=0, max=100)
    fine_tune_learning_rate: float | None = _opt(None, "learning rate of --fine-tune-epochs (cached fine-tuning: "
                                                       "of the convolutions, default 2e-4; the head's is 1e-3)",
                                                 flag="fine_tune_lr",
                                                 default_text=ARCH_DEFAULT)
    mixed_precision: str = _opt("auto", "mixed precision; auto: on GPUs only", choices=MIXED_PRECISION_CHOICES)
    xla: str = _opt("auto", "XLA compilation; auto: on a single GPU when every layer supports it",
                    choices=XLA_CHOICES)
    memory_growth: bool = _opt(True, "GPU memory allocated as needed, not all up front")
    distribute: str = _opt("auto", "auto: all local GPUs (MirroredStrategy), or the cluster in $TF_CONFIG "
                                   "(MultiWorkerMirroredStrategy: run the same command on each machine); off: one "
                                   "device", choices=DISTRIBUTE_CHOICES)
    logical_devices: int | None = _opt(None, "split the CPU into N logical devices and mirror over them (tests, "
                                             "benchmarks)", flag="devices", metavar="N", default_text="off")
    ood_refuse_factor: float = _opt(REFUSE_FACTOR, "the out-of-distribution gate refuses an image (no finding) "
                                                   "above this multiple of its unfamiliar threshold (the validation "
                                                   "scores' 99th percentile); between the two the finding is shown "
                                                   "with a caution", min=1.0, max=5.0)
    near_duplicate_distance: int = _opt(8, "dHash bits within which images count as near-duplicates (-1: off)")
    group_pattern: str | None = _opt(None, "regex on file names giving a patient id; a patient's images stay in "
                                           "one split", default_text="none")
    cache: bool = _opt(True, "cache the decoded images in memory between epochs", cli=False)
    model_options: dict = _opt(help="extra factory options (dense_units, dropout, ...)", cli=False, factory=dict)
    freeze_batchnorm: bool = _opt(False, "with --init-from: BatchNorm layers keep the earlier run's statistics "
                                         "(small datasets)")
    tta: list = _opt(help="test-time views averaged for validation, threshold and prediction, e.g. 'hflip' "
                          "(needs flip augmentation)", factory=list)
    ensemble: int = _opt(1, "train N models (seeds seed, seed+1, ...) on the same split and ship them merged as "
                            "one model that averages their logits", metavar="N", min=1, max=5)
    intended_use: dict | None = _opt(None, "the card's intended use: summary, DICOM modalities, body parts, ...",
                                     cli=False)
    training_data: str | None = _opt(None, "the card's description of where the training images come from",
                                     cli=False)

    @classmethod
    def from_dict(cls, values: Mapping, source: str | None = None) -> TrainConfig:
        """A config from a dict of its fields (a config file, a job); unknown keys are one plain error.

        ``comment`` and ``description`` keys are notes for readers and are dropped.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - set(DOC_KEYS))
        if unknown:
            where = f" in {source}" if source else ""
            raise MedclfError(f"Unknown training option(s){where}: {', '.join(map(str, unknown))}.")
        return cls(**{k: v for k, v in values.items() if k in known})

    def validate(self, models_dir: str | os.PathLike | None = None, *, check_data: bool = True) -> TrainConfig:
        """Raise a :class:`MedclfError` subclass with a plain message for a setting that cannot work; return self.

        Checks the dataset path (``check_data``), every field with choices, the run name (and that no
        run in ``models_dir``, default :func:`~medclf_core.registry.store.default_models_dir`, has it
        yet), the test-time views against the augmentation, the ensemble size, and the combinations
        the recipes refuse. What depends on the data itself (an ``auto`` augmentation's flips) is
        checked by :meth:`check_views` again once it is known. A full check (``check_data``) stamps
        the config as validated for ``models_dir`` (:meth:`is_validated`).
        """
        models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        from medclf_core.models.ensemble import check_members
        from medclf_core.registry.names import check_run_name

        if check_data:
            if not self.data:
                raise DatasetError("No dataset given: choose a dataset folder or zip first.")
            if not Path(str(self.data)).expanduser().exists():
                raise DatasetError(f"Dataset not found: {self.data} is not a folder or a zip file.")
        for f in fields(self):
            allowed = choices_of(f)
            value = getattr(self, f.name)
            if allowed is None or (f.name == "augment" and isinstance(value, dict)):
                continue
            if value is not None and value not in allowed:
                label = f.metadata.get("label") or f.name.replace("_", " ")
                raise MedclfError(f"Unknown {label} '{value}'; choose from "
                                  f"{', '.join(map(str, allowed))}.")
        if self.name is not None:
            check_run_name(self.name)
            if (models_dir / self.name).exists():
                raise MedclfError(f"A model named '{self.name}' already exists; choose another run name.")
        self.check_views(self._augment_preset())
        try:
            check_members(self.ensemble)
        except ValueError as exc:
            raise MedclfError(str(exc)) from None
        spec = get_architecture(self.arch)
        if self.init_from is None:  # with init_from, the earlier run's architecture is used
            pretrained = spec.is_pretrained and self.weights not in (None, "", "none")
            transfer = self.recipe == "transfer" or (self.recipe == "auto" and pretrained)
            if self.freeze_batchnorm and not spec.is_pretrained:
                raise MedclfError("freeze_batchnorm keeps the BatchNorm statistics of a trained model: use it with "
                                  "init_from (or ResNet-50's ImageNet weights), not on a model trained from scratch.")
        else:
            transfer = self.recipe == "transfer"
        if why := refuse_factor_problem(self.ood_refuse_factor):
            raise MedclfError(f"ood_refuse_factor {why}.")
        if transfer and self.ensemble > 1:
            raise MedclfError("The transfer recipe trains one head on one frozen backbone; an ensemble of identical "
                              "backbones adds nothing. Use ensemble 1.")
        if check_data:
            self.__dict__[_STAMP] = self.stamp(models_dir)
        return self

    def stamp(self, models_dir: str | os.PathLike | None = None) -> str:
        """A digest of the settings and the models folder: what :meth:`validate` records as checked."""
        folder = Path(models_dir) if models_dir is not None else default_models_dir()
        text = json.dumps([asdict(self), str(folder.expanduser().resolve())], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def is_validated(self, models_dir: str | os.PathLike | None = None) -> bool:
        """Whether :meth:`validate` passed these very settings for this models folder (no change since)."""
        return self.__dict__.get(_STAMP) == self.stamp(models_dir)

    def trust_stamp(self, stamp: str | None, models_dir: str | os.PathLike | None = None) -> TrainConfig:
        """Take a stamp recorded by an earlier :meth:`validate` of the same settings (a job's config on disk).

        The stamp counts only if it matches these settings and this models folder; a config changed,
        damaged or written by hand since is validated again by :func:`medclf_core.training.train`.
        (It records that the settings were checked, not who wrote them: whoever can write the job's
        folder can run code anyway. The registry checks the run name again when it writes the run.)
        """
        if stamp is not None and stamp == self.stamp(models_dir):
            self.__dict__[_STAMP] = stamp
        return self

    def check_views(self, augment: AugmentConfig | None) -> tuple[str, ...]:
        """The validated test-time views; ``augment`` None: its flips are not known yet (``auto``)."""
        from medclf_core.data.tta import check_views

        try:
            return check_views(self.tta, horizontal_flip_trained=augment.horizontal_flip if augment else None)
        except ValueError as exc:
            raise MedclfError(str(exc)) from None

    def _augment_preset(self) -> AugmentConfig | None:
        if isinstance(self.augment, dict):
            try:
                return AugmentConfig.from_dict(self.augment)
            except (TypeError, ValueError) as exc:
                raise MedclfError(f"The augmentation settings cannot be used: {exc}") from None
        return None if self.augment == "auto" else AugmentConfig.preset(self.augment)

    def resolved(self) -> TrainConfig:
        """A copy with architecture defaults filled in."""
        spec = get_architecture(self.arch)
        d = asdict(self)
        for key in ("epochs", "image_size", "channels", "batch_size", "learning_rate"):
            if d[key] is None:
                d[key] = spec.defaults[key]
        for key in ("fine_tune_epochs", "fine_tune_learning_rate"):
            if d[key] is None:
                d[key] = spec.defaults.get(key, 0 if key == "fine_tune_epochs" else None)
        if (self.fine_tune_learning_rate is None and d["fine_tune_epochs"] and spec.cached_fine_tune_from
                and self.recipe != "scratch"):
            d["fine_tune_learning_rate"] = CACHED_FINE_TUNE_LR  # training/top_tuning.py: the bench's rate
        return TrainConfig(**d)

    def augment_config(self, class_names: list[str], dataset_name: str) -> AugmentConfig:
        """The augmentation to train with; ``auto`` means :func:`auto_augment_preset`."""
        if isinstance(self.augment, dict):
            return AugmentConfig.from_dict(self.augment)
        preset = self.augment
        if preset == "auto":
            preset = auto_augment_preset(dataset_name, class_names, self.task)
        return AugmentConfig.preset(preset)


_STAMP = "_validated_stamp"  # an attribute, not a field: not a setting, not in asdict() or comparisons


def auto_augment_preset(dataset_name: str, class_names: list[str], task: str | None = None) -> str:
    """``chest_xray`` (no flips: they change laterality) when the dataset's name, classes or task name chest
    data (:data:`CHEST_HINTS`), else ``default``.

    >>> auto_augment_preset("cxr-2024", ["normal", "effusion"]), auto_augment_preset("skin", ["benign", "malignant"])
    ('chest_xray', 'default')
    """
    text = " ".join([dataset_name, *class_names, task or ""]).lower()
    return "chest_xray" if any(h in text for h in CHEST_HINTS) else "default"


def choices_of(f) -> tuple | None:
    """A field's allowed values (its metadata ``choices``), or None when any value of its type goes."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def train_fields():
    """The :class:`TrainConfig` fields that have a CLI flag, in declaration order."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def _field(name: str):
    return next(f for f in fields(TrainConfig) if f.name == name)


def form_range(name: str) -> tuple:
    """The ``(min, max)`` the Train page's form offers for a setting.

    >>> form_range("epochs")
    (1, 500)
    """
    meta = _field(name).metadata
    return meta["min"], meta["max"]


def suggested_values(name: str) -> tuple:
    """The values the Train page's form offers for a setting shown as a slider (``image_size``)."""
    return _field(name).metadata["suggested"]


def field_choices(name: str) -> tuple | None:
    """A setting's allowed values by name (:func:`choices_of`)."""
    return choices_of(_field(name))
