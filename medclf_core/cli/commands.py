"""Command-line twin of the app: ``python -m medclf_core {audit,train,evaluate,predict,list,refit-trust,export}``.

Results go to stdout (with ``--json``, the last line of stdout is one JSON value);
progress bars and messages go to stderr. Bad input ends with a one-line message
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG_DATA = """dataset layout:
  DATA/<class>/<images>                 split by medclf (stratified, seeded, duplicates kept together)
  DATA/{train,val,test}/<class>/<images> your own split (missing val/test are carved from train)
  or a .zip of either. Images: PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM (decoded by content)."""


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore", message=".*shuffle.*")


def _bar(desc: str, enabled: bool):
    from tqdm import tqdm

    state = {"bar": None}

    def update(done: int, total: int) -> None:
        if not enabled:
            return
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
        state["bar"].n = done
        state["bar"].refresh()
        if done >= total:
            state["bar"].close()

    return update


def _print_json(obj) -> None:
    print(json.dumps(obj, default=str))


def cmd_audit(args) -> int:
    from medclf_core.data.dataset import audit_dataset, scan_dataset

    index = scan_dataset(args.data)
    report = audit_dataset(index, near_duplicate_distance=args.near_duplicate_distance,
                           progress=_bar("Reading images", not args.no_progress))
    if args.json:
        _print_json({"root": index.root, "presplit": index.presplit, **report.to_dict()})
        return 0
    print(f"Dataset: {index.root} ({'pre-split' if index.presplit else 'class folders'})")
    print(f"Classes: {', '.join(index.class_names)}")
    for split, counts in report.counts.items():
        print(f"  {split:>5}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"Imbalance (largest/smallest): {report.imbalance_ratio:.2f}")
    for f in report.unreadable:
        print(f"  unreadable: {f['file']}: {f['error']}")
    for g in report.duplicate_groups:
        print(f"  duplicates: {' = '.join(g)}")
    for g in report.near_duplicate_groups:
        print(f"  near-duplicates: {' ~ '.join(g)}")
    for w in report.warnings():
        print(f"Note: {w}")
    print(f"Fingerprint: {report.fingerprint}")
    return 0


def train_config_from_args(args):
    """A TrainConfig from ``--config FILE`` (JSON of TrainConfig fields) overridden by explicit flags.

    Relative ``data`` paths in a config file are taken relative to the current directory.
    Unknown keys in the file are refused with one plain message (:meth:`TrainConfig.from_dict`).
    """
    from medclf_core.errors import MedclfError
    from medclf_core.training import TrainConfig
    from medclf_core.training.config import train_fields

    values: dict = {}
    if args.config:
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MedclfError(f"Cannot read the config file {args.config}: {exc}") from None
        if not isinstance(values, dict):
            raise MedclfError(f"The config file {args.config} must hold one JSON object of training settings.")
    for f in train_fields():  # the flags are generated from the fields (build_parser), under the field names
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


def cmd_train(args) -> int:
    from medclf_core.training.events import EventLog
    from medclf_core.registry.store import read_card
    from medclf_core.training import train

    cfg = train_config_from_args(args).validate(args.models_dir)
    outcome: dict = {}
    listeners = [lambda ev: outcome.update(ev) if ev["event"] == "done" else None]
    if not args.no_progress:
        listeners.append(_TrainPrinter())
    run_dir = train(cfg, models_dir=args.models_dir, events=EventLog(args.events, listeners))
    if outcome.get("registered") is False:  # a non-chief worker of a multi-worker run: the chief registers
        if args.json:
            _print_json({"run_dir": str(run_dir), "name": run_dir.name, "registered": False})
        else:
            print(f"Worker finished; the chief registers {run_dir.name}.")
        return 0
    card = read_card(run_dir)
    summary = {"run_dir": str(run_dir), "name": card["name"], "class_names": card["class_names"],
               "architecture": card["architecture"], "threshold": card["threshold"], "metrics": card["metrics"],
               "validation_metrics": card["validation_metrics"]}
    if args.json:
        _print_json(summary)
    else:
        m = card["metrics"]
        print(f"Registered {card['name']} in {run_dir}")
        print(f"{m['split']} accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}"
              + (f", AUC {m['auc']:.4f}" if m.get("auc") is not None else "")
              + (f", sensitivity {m['sensitivity']:.4f}, specificity {m['specificity']:.4f}" if "sensitivity" in m else ""))
    return 0


class _TrainPrinter:
    """Turns training events into progress bars on stderr.

    The numbers (epoch, batch, ETA, phase) come from the one fold of the events,
    :class:`medclf_core.training.events.TrainingProgress`, which the Train page shows too.
    """

    def __init__(self):
        from medclf_core.training.events import TrainingProgress

        self.bar = None
        self.progress = TrainingProgress()

    def __call__(self, ev: dict) -> None:
        from tqdm import tqdm

        from medclf_core.training.events import format_eta

        self.progress.add(ev)
        p = self.progress.state
        kind = ev["event"]
        if kind == "audit_progress":
            return
        if kind == "epoch_begin":
            self._close()
            self.bar = tqdm(total=None, desc=f"{p['phase'].capitalize()}: epoch {p['epoch']}/{p['epochs']}",
                            unit="batch", file=sys.stderr)
        elif kind == "batch" and self.bar is not None:
            self.bar.total = p["batches"]
            self.bar.n = p["batch"]
            m = ev.get("metrics") or {}
            self.bar.set_postfix(loss=f"{m.get('loss', 0):.3f}", acc=f"{m.get('accuracy', 0):.3f}",
                                 eta=format_eta(p["eta_s"]), refresh=True)
        elif kind == "epoch":
            m = ev["metrics"]
            self._close()
            print(f"Epoch {ev['epoch']}/{ev['epochs']}: loss {m.get('loss', 0):.4f} acc {m.get('accuracy', 0):.4f} "
                  f"val_loss {m.get('val_loss', 0):.4f} val_acc {m.get('val_accuracy', 0):.4f} "
                  f"({ev['seconds']:.1f}s, ETA {format_eta(p['eta_s'])})", file=sys.stderr)
        elif kind == "audit":
            print("Audit: " + "; ".join(f"{s}: " + ", ".join(f"{c} {n}" for c, n in v.items())
                                        for s, v in ev["counts"].items()), file=sys.stderr)
            for w in ev["warnings"]:
                print(f"  note: {w}", file=sys.stderr)
        elif kind == "split":
            print("Split: " + "; ".join(f"{s}: " + ", ".join(f"{c} {n}" for c, n in v.items())
                                        for s, v in ev["counts"].items()), file=sys.stderr)
        elif kind == "member":
            self._close()
            print(f"Model {ev['member']} of {ev['members']} (seed {ev['seed']})", file=sys.stderr)
        elif kind in ("notice", "resumed", "devices", "phase"):
            text = ev.get("message") or ev.get("description") or (
                f"resuming at epoch {ev['epoch']}" if kind == "resumed" else f"fine-tuning for {ev.get('epochs')} epochs")
            print(f"{kind}: {text}", file=sys.stderr)
        elif kind in ("done", "cancelled", "error"):
            self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _tta_arg(value: str | None) -> list[str] | None:
    """``--tta``: None (the model card's views), ``none``, or comma-separated view names."""
    if value is None:
        return None
    return [] if value == "none" else [v.strip() for v in value.split(",") if v.strip()]


def cmd_evaluate(args) -> int:
    from medclf_core.inference.predictor import Predictor, evaluate_folder

    predictor = Predictor.from_run(args.model, args.models_dir, tta=_tta_arg(args.tta))
    result = evaluate_folder(predictor, args.data, args.split, bootstrap=args.bootstrap,
                             progress=_bar("Evaluating", not args.no_progress))
    if args.record:
        result["recorded"] = str(_record(predictor, result, args.data))
    if args.json:
        _print_json(result)
        return 0
    print(f"Model {result['model']} on {result['dataset']} ({result['split']}, n={result['n']})")
    print(f"Accuracy {result['accuracy']:.4f}" + (f"  95% CI {result['ci95']['accuracy'][0]:.3f}-{result['ci95']['accuracy'][1]:.3f}"
                                                 if result.get("ci95") else ""))
    if result.get("auc") is not None:
        print(f"ROC-AUC  {result['auc']:.4f}")
    if "sensitivity" in result:
        print(f"At threshold {result['threshold']:.3f} on P({result['positive_class']}): "
              f"sensitivity {result['sensitivity']}, specificity {result['specificity']}")
    print(f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for c, m in result["per_class"].items():
        print(f"{c:<16}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>9}")
    print("Confusion matrix (rows true, columns predicted):")
    for c, row in zip(result["class_names"], result["confusion_matrix"], strict=True):
        print(f"  {c:<14}" + " ".join(f"{v:>6}" for v in row))
    if result.get("ece") is not None:
        print(f"Expected calibration error {result['ece']:.4f}"
              + (f" (temperature {result['temperature']:.3g})" if result.get("temperature") else " (uncalibrated)"))
    ood = result.get("ood") or {}
    if ood.get("checked"):
        print(f"Out of distribution: {ood['n_flagged']} of {ood['n']} images flagged ({ood['fraction_flagged']:.1%})")
        rest = ood.get("metrics_without_flagged")
        if rest:
            print(f"  without them (n={rest['n']}): accuracy {rest['accuracy']:.4f}"
                  + (f", ROC-AUC {rest['auc']:.4f}" if rest.get("auc") is not None else "")
                  + (f", sensitivity {rest['sensitivity']}, specificity {rest['specificity']}"
                     if "sensitivity" in rest else ""))
    else:
        print("Out of distribution: not checked (the model has no ood.npz; run refit-trust)")
    for s in result["skipped"]:
        print(f"skipped {s['file']}: {s['error']}")
    if result.get("recorded"):
        print(f"Recorded in {result['recorded']}")
    return 0


def _record(predictor, result: dict, data) -> Path:
    """Keep this evaluation beside the model (``evaluations/``): the card and the app show it as other-source data."""
    from medclf_core.registry.card import dataset_fingerprint, record_evaluation

    ood = result.get("ood") or {}
    return record_evaluation(predictor.card["run_dir"], result, dataset=Path(data).name or str(data),
                             fingerprint=dataset_fingerprint(data, split=result["split"]),
                             extra={"ood": {k: ood.get(k) for k in ("checked", "n_flagged", "fraction_flagged")},
                                    "data_path": str(data)})


def cmd_refit_trust(args) -> int:
    from medclf_core.trust.verdict import refit_trust

    res = refit_trust(args.model, args.data, models_dir=args.models_dir, percentile=args.percentile,
                      progress=_bar("Reading images", not args.no_progress))
    if args.json:
        _print_json(res)
        return 0
    o, c = res["ood"], res["calibration"]
    print(f"Refitted {res['run_dir']}: OOD gate on {o['n_train']} training images, threshold {o['threshold']:.4g} "
          f"({o['rule']}; flags {o['val_fraction_flagged']:.1%} of {o['n_val']} validation images)")
    print(f"Temperature {c['temperature']:.4g}: validation ECE {c['val_ece'][0]:.4f} -> {c['val_ece'][1]:.4f}"
          + (f"; threshold {c['threshold_uncalibrated']:.4g} -> {res['threshold']:.4g} (same decisions)"
             if res.get("threshold") is not None else ""))
    return 0


def _cam_text(r: dict) -> str:
    """`` -> map.png (faithfulness 0.42)`` for a result with a heat map, else ''."""
    if "cam" not in r:
        return ""
    from medclf_core.explain.cams import format_faithfulness

    return f" -> {r['cam']} (faithfulness {format_faithfulness(r.get('faithfulness'))})"


def cmd_predict(args) -> int:
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(args.model, args.models_dir, tta=_tta_arg(args.tta))
    # --cam: each file is decoded once, for its prediction and its overlay (kept only then: memory)
    decoded: dict | None = {} if args.cam else None
    results = predictor.predict_files(args.files, decoded=decoded)
    if args.cam:
        from medclf_core.explain.cams import overlay, save_png

        out_dir = Path(args.cam)
        out_dir.mkdir(parents=True, exist_ok=True)
        readable = [i for i, r in enumerate(results) if "error" not in r and i in decoded]
        ok = [results[i] for i in readable]
        pixels = [decoded[i].pixels for i in readable]
        # the map of the class each result names, scored by a deletion curve (Predictor.explain)
        explained = predictor.explain(pixels, getattr(args, "cam_method", "gradcam"), [r["label"] for r in ok],
                                      faithfulness=True) if pixels else []
        for k, (r, px, ex) in enumerate(zip(ok, pixels, explained, strict=True)):
            target = out_dir / f"{k:03d}_{Path(r['file']).stem}_cam.png"
            save_png(target, overlay(px, ex.heatmap, opacity=args.opacity))
            r["cam"] = str(target)
            r["cam_method"] = ex.method
            r["faithfulness"] = ex.faithfulness
            if ex.faithfulness is None and ex.deletion and ex.deletion.get("note"):
                r["faithfulness_note"] = ex.deletion["note"]
    if getattr(args, "report", None):  # --report DIR: one PDF per readable image (medclf_core.reports.pdf)
        from medclf_core.reports.pdf import write_reports

        written = write_reports(predictor, results, args.report, method=getattr(args, "cam_method", "gradcam"),
                                opacity=args.opacity)
        print(f"Wrote {len(written)} PDF report(s) to {args.report}", file=sys.stderr)
    if args.json:
        _print_json(results)
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: ERROR {r['error']}")
            else:
                probs = ", ".join(f"{c} {p:.3f}" for c, p in r["probabilities"].items())
                cam = _cam_text(r)
                if r.get("ood"):
                    print(f"{r['file']}: OUT OF DISTRIBUTION ({r['ood_reason']}); not a finding. "
                          f"Model output {r['label']} ({probs})" + cam)
                    continue
                print(f"{r['file']}: {r['label']} ({probs})" + cam)
    return 2 if any("error" in r for r in results) else 0


def cmd_export(args) -> int:
    """Export a run as a TensorFlow SavedModel folder or a .tflite file, with its card (medclf_core.registry.export)."""
    from medclf_core.registry.export import export_model

    out = export_model(args.model, args.format, args.output, models_dir=args.models_dir, overwrite=args.overwrite)
    if args.json:
        _print_json({"model": args.model, "format": args.format, "output": str(out)})
    else:
        print(f"Exported {args.model} as {args.format} to {out} (card and EXPORT.md "
              + ("in its assets/ folder)" if args.format == "savedmodel" else "beside it)"))
    return 0


def cmd_list(args) -> int:
    """Every run; a run whose card is damaged or not valid is listed as unreadable, with the reason."""
    from medclf_core.registry.card import MIN_RELIABLE_N
    from medclf_core.registry.store import scan_registry

    runs, unreadable = scan_registry(args.models_dir)
    if args.json:
        _print_json([{**{k: r[k] for k in ("name", "task", "architecture", "class_names", "metrics", "created",
                                           "run_dir", "schema_version")},
                      "n": r.test_n, "bundled": r.is_bundled, "unreadable": False} for r in runs]
                    + [{"name": u["name"], "run_dir": u["run_dir"], "unreadable": True, "reason": u["reason"]}
                       for u in unreadable])
        return 0

    def num(v) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"

    for r in runs:
        m, n = r.metrics, r.test_n
        toy = f"  (n < {MIN_RELIABLE_N}: too few test images)" if r.is_toy else ""
        print(f"{r.name:<32} {r.architecture or '?':<11} {','.join(r.class_names):<28} "
              f"acc {num(m.get('accuracy'))} auc {num(m.get('auc'))} n {n if n is not None else '?'}  "
              f"{r.created or ''}{toy}")
    for u in unreadable:
        print(f"{u['name']:<32} UNREADABLE: {u['reason']}")
    if not runs and not unreadable:
        print("No models registered yet.")
    return 0


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"invalid choice: '{value}' (choose from 'on', 'off')")
    return value == "on"


def _view_list(value: str) -> list[str]:
    """``--tta hflip,...``: comma-separated view names; ``none`` for no views."""
    return [x.strip() for x in value.split(",") if x.strip() and x.strip() != "none"]


# How a flag's text becomes a field's value, for the fields whose type alone does not say.
_FLAG_PARSERS = {"tta": _view_list}


def _add_train_flags(t: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (help, choices and the stated default from the field).

    Every flag's argparse default is None, so that a ``--config`` file's value stands unless
    a flag is given; the field's own default applies when neither sets it.
    """
    import dataclasses
    import typing

    from medclf_core.training import TrainConfig
    from medclf_core.training.config import choices_of, train_fields

    hints = typing.get_type_hints(TrainConfig)
    for f in train_fields():
        meta = f.metadata
        help_text = meta["help"]
        if f.name == "data":
            t.add_argument("data", nargs="?", help=help_text)
            continue
        flag = "--" + (meta["flag"] or f.name).replace("_", "-")
        kind = hints[f.name]
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if typing.get_args(kind) else kind
        choices = choices_of(f)
        options: dict = {"dest": f.name, "default": None}
        if meta["metavar"]:
            options["metavar"] = meta["metavar"]
        if base is bool and f.default is False:  # a switch
            t.add_argument(flag, action="store_const", const=True, help=help_text, **options)
            continue
        if base is bool:
            options.update(type=_on_off, metavar="{on,off}")
            default = "on" if f.default else "off"
        else:
            options["type"] = _FLAG_PARSERS.get(f.name) or (base if base in (int, float) else str)
            if choices is not None:
                options["choices"] = list(choices)
            default = meta["default_text"] or f.default
            if default in (None, dataclasses.MISSING):
                default = "none"
        t.add_argument(flag, help=f"{help_text} (default: {default})", **options)


def build_parser() -> argparse.ArgumentParser:
    from medclf_core.models.architectures import ARCHITECTURES
    from medclf_core.explain.cams import METHODS

    p = argparse.ArgumentParser(prog="python -m medclf_core",
                                description="Train, evaluate and use medical image classifiers (the medclf engine).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, models=True):
        sp.add_argument("--json", action="store_true", help="print the result as JSON (last line of stdout)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
        if models:
            sp.add_argument("--models-dir", default=None,
                            help="model registry folder (default: $MEDCLF_MODELS_DIR or ./models)")

    a = sub.add_parser("audit", help="check a dataset: counts, imbalance, unreadable files, duplicates",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    a.add_argument("data", help="dataset folder or .zip")
    a.add_argument("--near-duplicate-distance", type=int, default=8,
                   help="dHash bits within which images count as near-duplicates (-1: off; default 8)")
    common(a, models=False)
    a.set_defaults(func=cmd_audit)

    archs = "; ".join(f"{n}: {s.description}" for n, s in ARCHITECTURES.items())
    t = sub.add_parser("train", help="train a model, evaluate it, and register the run",
                       description=f"Architectures: {archs}", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=EPILOG_DATA + "\n\nA killed run resumes when the same command is run again.")
    t.add_argument("--config", help="JSON file of training settings (TrainConfig fields); flags override it")
    _add_train_flags(t)
    t.add_argument("--events", help="also write progress events (JSON lines) to this file")
    common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a registered model on a dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_DATA)
    e.add_argument("model", help="run folder, or run name in the models dir")
    e.add_argument("data", help="dataset folder or .zip")
    e.add_argument("--split", default="auto", choices=["auto", "all", "train", "val", "test"],
                   help="auto: the test folder of a pre-split dataset, else all images")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    e.add_argument("--tta", help="test-time views to average: 'none', or e.g. 'hflip' (default: the model card's)")
    e.add_argument("--record", action="store_true",
                   help="keep the result beside the model (evaluations/: dataset fingerprint, n, metrics, date); "
                        "the Models and Predict pages show it next to the model's own test figures")
    common(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files (exit 2 if any file was rejected)")
    pr.add_argument("model", help="run folder, or run name in the models dir")
    pr.add_argument("files", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, DICOM, ...)")
    pr.add_argument("--cam", metavar="DIR", help="write a heat-map overlay PNG per image into DIR, for the predicted "
                                                 "class, with its faithfulness score (deletion curve against random "
                                                 "order: 0 = no better than random, 1 = best; ~38 forward passes)")
    pr.add_argument("--opacity", type=float, default=0.4, help="overlay opacity (default 0.4)")
    pr.add_argument("--report", metavar="DIR", help="write a printable PDF report per image into DIR (image, heat "
                                                    "map, probabilities, decision, model card; no patient identifiers)")
    pr.add_argument("--cam-method", default="gradcam", choices=list(METHODS),
                    help="heat-map method for --cam (default gradcam; scorecam is ~16 forward passes per image)")
    pr.add_argument("--tta", help="test-time views to average: 'none', or e.g. 'hflip' (default: the model card's)")
    common(pr)
    pr.set_defaults(func=cmd_predict)

    rt = sub.add_parser("refit-trust", help="fit a run's out-of-distribution gate and temperature (no retraining)",
                        description="Recreates the run's train/val split exactly as training did, fits the "
                                    "out-of-distribution gate on the training features and the temperature on the "
                                    "validation probabilities, maps a binary threshold through it (same decisions), "
                                    "and writes ood.npz and the card's 'ood' and 'calibration' entries.")
    rt.add_argument("model", help="run folder, or run name in the models dir")
    rt.add_argument("data", nargs="?", help="the dataset the run was trained on (default: the card's source)")
    rt.add_argument("--percentile", type=float, default=99.0,
                    help="gate threshold: this percentile of the validation scores (default 99)")
    common(rt)
    rt.set_defaults(func=cmd_refit_trust)

    ex = sub.add_parser("export", help="export a model as a TensorFlow SavedModel or TensorFlow Lite file",
                        description="Writes the raw model (pixels 0-255 in, softmax out) with its model card and "
                                    "EXPORT.md (savedmodel: in OUTPUT/assets/; tflite: <stem>.card.json and "
                                    "<stem>.EXPORT.md beside the .tflite) and ood.npz when the run has one. The "
                                    "card's calibration temperature is not inside the exported model: EXPORT.md says "
                                    "how to apply it.")
    ex.add_argument("model", help="run folder, or run name in the models dir")
    ex.add_argument("--format", required=True, choices=["savedmodel", "tflite"], help="export format")
    ex.add_argument("--output", required=True, metavar="PATH",
                    help="savedmodel: the folder to create; tflite: the .tflite file to write")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output")
    common(ex)
    ex.set_defaults(func=cmd_export)

    ls = sub.add_parser("list", help="list registered models")
    common(ls)
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    from medclf_core.errors import MedclfError

    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MedclfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
