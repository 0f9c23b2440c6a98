"""The ``medclf`` argument parser: one small function per sub-command, and the arguments turned into settings.

The ``train`` flags are not written by hand: :func:`add_train_flags` makes one flag per
:class:`~medclf_core.training.config.TrainConfig` field from the field's metadata (help, flag name,
choices, stated default), so the command line and the Train page offer the same settings.
Each sub-parser stores its command's name in ``args.command``; :mod:`medclf_core.cli.commands` runs it.

    >>> args = build_parser().parse_args(["predict", "my-run", "a.png", "--tta", "none"])
    >>> args.command, args.files, tta_views(args.tta)
    ('predict', ['a.png'], [])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

from medclf_core.errors import MedclfError

PROG = "python -m medclf_core"
EPILOG_DATA = """dataset layout:
  DATA/<class>/<images>                 split by medclf (stratified, seeded, duplicates kept together)
  DATA/{train,val,test}/<class>/<images> your own split (missing val/test are carved from train)
  or a .zip of either. Images: PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM (decoded by content)."""
_MODEL_HELP = "run folder, or run name in the models dir"
_DATA_HELP = "dataset folder or .zip"
_TTA_HELP = "test-time views to average: 'none', or e.g. 'hflip' (default: the model card's)"
_SITE_HELP = "use this site's calibration (temperature and threshold, from `recalibrate --site`) instead of the card's"


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """:func:`build_parser`'s arguments, with a command's list of files (or models) also taken after its
    options: argparse ends ``predict MODEL FILE...`` at the first option, so ``predict MODEL --site A a.png``
    was refused with "unrecognized arguments: a.png".

    >>> parse_command_line(["predict", "m", "--tta", "none", "a.png", "b.png"]).files
    ['a.png', 'b.png']
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    spill = next((k for k in ("files", "models") if isinstance(getattr(args, k, None), list)), None)
    if extra and spill and not any(e.startswith("-") for e in extra):
        getattr(args, spill).extend(extra)
        extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command (``audit``, ``train``, ``evaluate``, ``predict``, ``refit-trust``,
    ``export``, ``list``)."""
    p = argparse.ArgumentParser(prog=PROG,
                                description="Train, evaluate and use medical image classifiers (the medclf engine).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_audit, _add_train, _add_evaluate, _add_predict, _add_refit_trust, _add_recalibrate, _add_export,
                _add_export_lite, _add_list):
        add(sub)
    return p


def _add_common(sp: argparse.ArgumentParser, models: bool = True) -> None:
    """``--json``, ``--no-progress`` and (for commands that use registered models) ``--models-dir``."""
    sp.add_argument("--json", action="store_true", help="print the result as JSON (last line of stdout)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    if models:
        sp.add_argument("--models-dir", default=None,
                        help="model registry folder (default: $MEDCLF_MODELS_DIR or ./models)")


def _add_audit(sub) -> None:
    a = sub.add_parser("audit", help="check a dataset: counts, imbalance, unreadable files, duplicates",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    a.add_argument("data", help=_DATA_HELP)
    a.add_argument("--near-duplicate-distance", type=int, default=8,
                   help="dHash bits within which images count as near-duplicates (-1: off; default 8)")
    _add_common(a, models=False)


def _add_train(sub) -> None:
    from medclf_core.models.architectures import ARCHITECTURES

    archs = "; ".join(f"{n}: {s.description}" for n, s in ARCHITECTURES.items())
    t = sub.add_parser("train", help="train a model, evaluate it, and register the run",
                       description=f"Architectures: {archs}", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=EPILOG_DATA + "\n\nA killed run resumes when the same command is run again.")
    t.add_argument("--config", help="JSON file of training settings (TrainConfig fields); flags override it")
    add_train_flags(t)
    t.add_argument("--events", help="also write progress events (JSON lines) to this file")
    _add_common(t)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="metrics of a registered model on a dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    e.add_argument("model", help=_MODEL_HELP)
    e.add_argument("data", help=_DATA_HELP)
    e.add_argument("--split", default="auto", choices=["auto", "all", "train", "val", "test"],
                   help="auto: the test folder of a pre-split dataset, else all images")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    e.add_argument("--group-pattern", metavar="REGEX",
                   help="regular expression on file names giving a patient or case id (its first group, else the "
                        "match): the 95%% intervals resample whole patients, since one patient's images are not "
                        "independent; a name it does not match is a patient of its own")
    e.add_argument("--tta", help=_TTA_HELP)
    e.add_argument("--site", metavar="NAME", help=_SITE_HELP)
    e.add_argument("--record", action="store_true",
                   help="keep the result beside the model (evaluations/: dataset fingerprint, n, metrics, date); "
                        "the Models and Predict pages show it next to the model's own test figures")
    _add_common(e)


def _add_predict(sub) -> None:
    from medclf_core.explain.cams import METHODS
    from medclf_core.explain.render import OVERLAY_OPACITY

    pr = sub.add_parser("predict", help="classify image files (exit 2 if any file was rejected)")
    pr.add_argument("model", help=_MODEL_HELP)
    pr.add_argument("files", nargs="*", help="image files (PNG, JPEG, BMP, TIFF, DICOM, ...); or --pacs and --study")
    pr.add_argument("--cam", metavar="DIR", help="write a heat-map overlay PNG per image into DIR, for the predicted "
                                                 "class, with its faithfulness score (deletion curve against random "
                                                 "order: 0 = no better than random, 1 = best; ~38 forward passes)")
    pr.add_argument("--opacity", type=float, default=OVERLAY_OPACITY,
                    help=f"overlay opacity (default {OVERLAY_OPACITY}, as the Predict page)")
    pr.add_argument("--report", metavar="DIR", help="write a printable PDF report per image into DIR (image, heat "
                                                    "map, probabilities, decision, model card; no patient identifiers)")
    pr.add_argument("--cam-method", default="gradcam", choices=list(METHODS),
                    help="heat-map method for --cam (default gradcam; scorecam is ~16 forward passes per image)")
    pr.add_argument("--tta", help=_TTA_HELP)
    pr.add_argument("--site", metavar="NAME", help=_SITE_HELP + " (also in --report)")
    _add_pacs(pr)
    _add_common(pr)


def _add_pacs(pr) -> None:
    """``predict --pacs URL --study UID [--series UID] [--store]``: read a study from a PACS over DICOMweb."""
    from medclf_core.pacs.flow import MAX_INSTANCES

    g = pr.add_argument_group("PACS", "read the images of a study from a PACS over DICOMweb instead of files; "
                                      "the user and password come from MEDCLF_PACS_USER and MEDCLF_PACS_PASSWORD")
    g.add_argument("--pacs", metavar="URL", help="DICOMweb root URL, e.g. http://127.0.0.1:8042/dicom-web")
    g.add_argument("--study", metavar="UID", help="StudyInstanceUID of the study to classify")
    g.add_argument("--series", metavar="UID", help="only this SeriesInstanceUID of the study")
    g.add_argument("--store", action="store_true",
                   help="write each result back into the study as new series: a DICOM SR with the finding, a "
                        "Secondary Capture of the heat map (not for diagnosis); with --report also the PDF")
    g.add_argument("--max-instances", type=int, default=MAX_INSTANCES,
                   help=f"read at most this many image instances (default {MAX_INSTANCES}); the rest are named")


def _add_refit_trust(sub) -> None:
    rt = sub.add_parser("refit-trust", help="fit a run's out-of-distribution gate and temperature (no retraining)",
                        description="Recreates the run's train/val split exactly as training did, fits the "
                                    "out-of-distribution gate on the training features and the temperature on the "
                                    "validation probabilities, maps a binary threshold through it (same decisions), "
                                    "and writes ood.npz and the card's 'ood' and 'calibration' entries.")
    rt.add_argument("model", help=_MODEL_HELP)
    rt.add_argument("data", nargs="?", help="the dataset the run was trained on (default: the card's source)")
    rt.add_argument("--percentile", type=float, default=99.0,
                    help="gate threshold: this percentile of the validation scores (default 99)")
    rt.add_argument("--refuse-factor", type=float, default=None, metavar="F",
                    help="refuse (no finding) above F times that threshold; between the two the finding is shown "
                         "with a caution (default: the run's, else 1.75)")
    _add_common(rt)


def _add_recalibrate(sub) -> None:
    rc = sub.add_parser("recalibrate", help="fit a site's own temperature and threshold on its labelled images",
                        description="Runs the model on the site's labelled images (DATA/<class>/<images>), fits a "
                                    "temperature (T >= 1) and, for a binary model, the threshold that reaches the "
                                    "target sensitivity; checks both by cross-fitting on two held-back halves; and "
                                    "writes sites/NAME.json in the model folder (the weights and card are untouched). "
                                    "`predict`, `evaluate` and `predict --report` then take --site NAME.",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    rc.add_argument("model", help=_MODEL_HELP)
    rc.add_argument("data", help=_DATA_HELP + " of the site's labelled images")
    rc.add_argument("--site", required=True, metavar="NAME", help="the site's name (letters, digits, '.', '_', '-')")
    rc.add_argument("--target-sensitivity", type=float, default=0.95,
                    help="binary models: the sensitivity the threshold keeps on the site's images (default 0.95)")
    rc.add_argument("--split", default="all", choices=["auto", "all", "train", "val", "test"],
                    help="which images of a pre-split folder (default: all)")
    rc.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    rc.add_argument("--force", action="store_true",
                    help="save even when a warning needs a decision: the checked sensitivity misses the target, the "
                         "site's calibration does worse than the card's, or the images are the model's training "
                         "images (without --force such a fit is printed, not saved, and the exit status is 1)")
    _add_common(rc)


def _add_export(sub) -> None:
    ex = sub.add_parser("export", help="export a model as a TensorFlow SavedModel or TensorFlow Lite file",
                        description="Writes the raw model (pixels 0-255 in, softmax out) with its model card and "
                                    "EXPORT.md (savedmodel: in OUTPUT/assets/; tflite: <stem>.card.json and "
                                    "<stem>.EXPORT.md beside the .tflite) and ood.npz when the run has one. The "
                                    "card's calibration temperature is not inside the exported model: EXPORT.md says "
                                    "how to apply it.")
    ex.add_argument("model", help=_MODEL_HELP)
    ex.add_argument("--format", required=True, choices=["savedmodel", "tflite"], help="export format")
    ex.add_argument("--output", required=True, metavar="PATH",
                    help="savedmodel: the folder to create; tflite: the .tflite file to write")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_common(ex)


def _add_export_lite(sub) -> None:
    el = sub.add_parser("export-lite", help="(re)write registered models' fast-start LiteRT files (model.tflite)",
                        description="Writes model.tflite and model.tflite.json beside each run's model.keras, so the "
                                    "app predicts and draws Grad-CAM without TensorFlow (medclf_core.inference.lite). "
                                    "Run it after replacing a model.keras by hand; training writes them itself.")
    el.add_argument("models", nargs="*", metavar="MODEL", help=_MODEL_HELP)
    el.add_argument("--all", action="store_true", help="every registered model")
    el.add_argument("--stale", action="store_true",
                    help="only the runs whose files are missing or do not match their model.keras (e.g. before "
                         "starting the app after a retraining); a model already found to have no fast path is "
                         "not tried again until its model.keras changes")
    _add_common(el)


def _add_list(sub) -> None:
    ls = sub.add_parser("list", help="list registered models")
    _add_common(ls)


# ----------------------------------------------------------------------------- train flags from TrainConfig

def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"invalid choice: '{value}' (choose from 'on', 'off')")
    return value == "on"


def _view_list(value: str) -> list[str]:
    """``--tta hflip,...`` of ``train``: comma-separated view names; ``none`` for no views."""
    return [x.strip() for x in value.split(",") if x.strip() and x.strip() != "none"]


# How a flag's text becomes a field's value, for the fields whose type alone does not say.
_FLAG_PARSERS = {"tta": _view_list}


def add_train_flags(t: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (help, choices and the stated default from the field).

    Every flag's argparse default is None, so that a ``--config`` file's value stands unless
    a flag is given; the field's own default applies when neither sets it.
    """
    from medclf_core.training import TrainConfig
    from medclf_core.training.config import train_fields

    hints = typing.get_type_hints(TrainConfig)
    for f in train_fields():
        if f.name == "data":
            t.add_argument("data", nargs="?", help=f.metadata["help"])
            continue
        flag = "--" + (f.metadata["flag"] or f.name).replace("_", "-")
        kind = hints[f.name]
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if typing.get_args(kind) else kind
        t.add_argument(flag, **_train_flag_options(f, base))


def _train_flag_options(f: dataclasses.Field, base: type) -> dict:
    """The ``add_argument`` keywords of one TrainConfig field whose value type is ``base``."""
    from medclf_core.training.config import choices_of

    meta = f.metadata
    options: dict = {"dest": f.name, "default": None, "help": meta["help"]}
    if meta["metavar"]:
        options["metavar"] = meta["metavar"]
    if base is bool and f.default is False:  # a switch
        return {**options, "action": "store_const", "const": True}
    if base is bool:
        options.update(type=_on_off, metavar="{on,off}")
        default = "on" if f.default else "off"
    else:
        options["type"] = _FLAG_PARSERS.get(f.name) or (base if base in (int, float) else str)
        choices = choices_of(f)
        if choices is not None:
            options["choices"] = list(choices)
        default = meta["default_text"] or f.default
        if default in (None, dataclasses.MISSING):
            default = "none"
    options["help"] = f"{meta['help']} (default: {default})"
    return options


def train_config_from_args(args):
    """A TrainConfig from ``--config FILE`` (JSON of TrainConfig fields) overridden by explicit flags.

    Relative ``data`` paths in a config file are taken relative to the current directory.
    Unknown keys in the file are refused with one plain message (:meth:`TrainConfig.from_dict`).
    """
    from medclf_core.training import TrainConfig
    from medclf_core.training.config import train_fields

    values = _config_file_values(args.config) if args.config else {}
    for f in train_fields():  # the flags are generated from the fields (add_train_flags), under the field names
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if isinstance(values.get("memory_growth"), str):  # "on"/"off" in a config file, as on the command line
        values["memory_growth"] = values["memory_growth"] == "on"
    if values.get("weights") == "none":  # --weights none (or "none" in the file): no pretrained weights
        values["weights"] = None
    if not values.get("data"):
        raise MedclfError("No dataset given: pass DATA or a --config file with a 'data' entry.")
    return TrainConfig.from_dict(values, source=args.config)


def _config_file_values(path: str) -> dict:
    """The settings of a ``--config`` file: one JSON object, else one plain error."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedclfError(f"Cannot read the config file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise MedclfError(f"The config file {path} must hold one JSON object of training settings.")
    return values


def tta_views(value: str | None) -> list[str] | None:
    """``--tta`` of ``evaluate``/``predict``: None (the model card's views), ``none``, or comma-separated names.

    >>> tta_views(None), tta_views("none"), tta_views("hflip, vflip")
    (None, [], ['hflip', 'vflip'])
    """
    if value is None:
        return None
    return [] if value == "none" else [v.strip() for v in value.split(",") if v.strip()]
