"""What the ``medclf`` command prints: results on stdout (as text, or as one JSON value), progress on stderr.

One ``print_*`` function per command's result, the progress bars of long reads
(:func:`progress_bar`) and of training (:class:`TrainProgressPrinter`). Nothing here computes a
result: :mod:`medclf_core.cli.commands` hands over what the core returned. Numbers go through
:mod:`medclf_core.formatting`.

    >>> print_predictions([{"file": "a.png", "label": "NORMAL", "probabilities": {"NORMAL": 0.38, "PNEUMONIA": 0.62},
    ...                     "threshold": 0.75, "positive_class": "PNEUMONIA"},
    ...                    {"file": "b.png", "error": "The file is empty (0 bytes)."}])
    a.png: NORMAL (P(PNEUMONIA) = 62.0%), below the threshold 75.0% [NORMAL 38.0%, PNEUMONIA 62.0%]
    b.png: ERROR The file is empty (0 bytes).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence

from medclf_core.formatting import CROSS_VALIDATION, MIN_RELIABLE_N, number, percent, probability_text
from medclf_core.io.deid import safe_file_label
from medclf_core.trust.selective import deferral_sentence
from medclf_core.trust.sites import metric_texts



#: The metrics an epoch line shows, in order, with their short names.
_EPOCH_METRICS = (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc"))

def print_json(obj) -> None:
    """``obj`` as one line of JSON (values JSON does not know, such as paths, as text)."""
    print(json.dumps(obj, default=str))


class _TerminalLog(logging.Handler):
    """medclf's log warnings on the terminal as "warning: ...", except what the user was already told in plain
    words (``extra=SHOWN_TO_USER``: the damaged file's decoder detail beside "The JPEG file is damaged ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "shown_to_user", False)

    def emit(self, record: logging.LogRecord) -> None:
        message(f"{record.levelname.lower()}: {record.getMessage()}")  # stderr as it is now (tests swap it)


def log_to_terminal() -> None:
    """Send the package's log warnings (loggers ``medclf`` and ``medclf_core.*``) to stderr through
    :class:`_TerminalLog`; once per process. Without it Python prints every warning, the ones already shown too."""
    for name in ("medclf", "medclf_core"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _TerminalLog) for h in logger.handlers):
            logger.addHandler(_TerminalLog(logging.WARNING))


def message(text: str) -> None:
    """A message for the person at the terminal (stderr: stdout holds only results)."""
    print(text, file=sys.stderr)


def progress_bar(desc: str, enabled: bool):
    """A ``progress(done, total)`` callback that draws a bar on stderr: nothing when not ``enabled`` or when stderr
    is not a terminal (a log file or a pipe got one redrawn line per image)."""
    from tqdm import tqdm

    state = {"bar": None}
    enabled = enabled and sys.stderr.isatty()

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


def _counts_text(counts: Mapping[str, Mapping[str, int]]) -> str:
    """``train: NORMAL 10, PNEUMONIA 12; val: ...``"""
    return "; ".join(f"{s}: " + ", ".join(f"{c} {n}" for c, n in v.items()) for s, v in counts.items())


def print_audit(index, report) -> None:
    """A dataset audit (:func:`medclf_core.data.audit.audit_dataset`) as text."""
    print(f"Dataset: {index.root} ({'pre-split' if index.presplit else 'class folders'})")
    print(f"Classes: {', '.join(index.class_names)}")
    for split, counts in report.counts.items():
        print(f"  {split:>5}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"Imbalance (largest/smallest): {number(report.imbalance_ratio, 2)}")
    for f in report.unreadable:
        print(f"  unreadable: {safe_file_label(f['file'])}: {f['error']}")
    for g in report.duplicate_groups:
        print(f"  duplicates: {' = '.join(g)}")
    for g in report.near_duplicate_groups:
        print(f"  near-duplicates: {' ~ '.join(g)}")
    for w in report.warnings():
        print(f"Note: {w}")
    print(f"Fingerprint: {report.fingerprint}")


def print_worker_finished(run_dir) -> None:
    """A non-chief worker of a multi-worker run ends here: the chief registers the run."""
    print(f"Worker finished; the chief registers {run_dir.name}.")


def print_trained(card: Mapping, run_dir) -> None:
    """The registered run's name and its held-out figures."""
    m = card["metrics"]
    print(f"Registered {card['name']} in {run_dir}")
    print(f"{m['split']} accuracy {number(m['accuracy'], 4)}, macro F1 {number(m['macro_f1'], 4)}"
          + (f", AUC {number(m['auc'], 4)}" if m.get("auc") is not None else "")
          + (f", sensitivity {number(m['sensitivity'], 4)}, specificity {number(m['specificity'], 4)}"
             if "sensitivity" in m else ""))


class TrainProgressPrinter:
    """Turns training events into progress bars and lines on stderr.

    The numbers (epoch, batch, ETA, phase) come from the one fold of the events,
    :class:`medclf_core.training.events.TrainingProgress`, which the Train page shows too.
    """

    def __init__(self):
        from medclf_core.training.events import TrainingProgress

        self.bar = None
        self.progress = TrainingProgress()

    def __call__(self, ev: dict) -> None:
        self.progress.add(ev)
        kind = ev["event"]
        if kind in ("epoch_begin", "batch", "epoch"):
            self._epoch_event(kind, ev)
        elif kind in ("audit", "split"):
            print(f"{kind.capitalize()}: {_counts_text(ev['counts'])}", file=sys.stderr)
            for w in ev.get("warnings", []) if kind == "audit" else []:
                print(f"  note: {w}", file=sys.stderr)
        elif kind == "member":
            self._close()
            print(f"Model {ev['member']} of {ev['members']} (seed {ev['seed']})", file=sys.stderr)
        elif kind in ("notice", "resumed", "devices", "phase"):
            text = ev.get("message") or ev.get("description") or (
                f"resuming at epoch {ev['epoch']}" if kind == "resumed" else f"fine-tuning for {ev.get('epochs')} epochs")
            print(f"{kind}: {text}", file=sys.stderr)
        elif kind in ("done", "cancelled", "error"):
            self._close()

    def _epoch_event(self, kind: str, ev: dict) -> None:
        """An epoch's bar: opened at its start, moved by each batch, closed with the epoch's line."""
        from tqdm import tqdm

        from medclf_core.training.events import format_eta

        p = self.progress.state
        if kind == "epoch_begin":
            self._close()
            self.bar = tqdm(total=None, desc=f"{p['phase'].capitalize()}: epoch {p['epoch']}/{p['epochs']}",
                            unit="batch", file=sys.stderr, disable=not sys.stderr.isatty())  # the epoch lines stay
        elif kind == "batch" and self.bar is not None:
            self.bar.total = p["batches"]
            self.bar.n = p["batch"]
            m = ev.get("metrics") or {}
            shown = {short: number(m[k]) for k, short in _EPOCH_METRICS[:2] if k in m}  # training loss, accuracy
            self.bar.set_postfix(**shown, eta=format_eta(p["eta_s"]), refresh=True)
        elif kind == "epoch":
            m = ev["metrics"]
            self._close()
            # a metric the phase does not compute is left out, not printed as 0 (fine-tuning on cached
            # activations has no training accuracy)
            shown = " ".join(f"{short} {number(m[k], 4)}" for k, short in _EPOCH_METRICS if k in m)
            print(f"Epoch {ev['epoch']}/{ev['epochs']}: {shown} "
                  f"({number(ev['seconds'], 1)}s, ETA {format_eta(p['eta_s'])})", file=sys.stderr)

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_evaluation(result: Mapping) -> None:
    """An evaluation (:func:`medclf_core.inference.folder.evaluate_folder`) as text: figures, per-class
    table, confusion matrix, calibration, the out-of-distribution summary and what deferring 10% of the
    images to a reader gains (:func:`medclf_core.trust.selective.deferral_sentence`, per ordering)."""
    ci = result.get("ci95")
    print(f"Model {result['model']} on {result['dataset']} ({result['split']}, n={result['n']})")
    _print_overlap(result.get("overlap"))
    print(f"Accuracy {number(result['accuracy'], 4)}"
          + (f"  95% CI {number(ci['accuracy'][0])}-{number(ci['accuracy'][1])}" if ci else "")
          + (f" (resampling {result['n_groups']} patients or cases, not images)"
             if ci and result.get("n_groups") else ""))
    if result.get("group_note"):
        print(f"Note: {result['group_note']}")
    if result.get("auc") is not None:
        print(f"ROC-AUC  {number(result['auc'], 4)}"
              + (f"  95% CI {number(ci['auc'][0])}-{number(ci['auc'][1])}" if ci and ci.get("auc") else ""))
    if "sensitivity" in result:
        print(f"At threshold {number(result['threshold'])} on P({result['positive_class']}): "
              f"sensitivity {number(result['sensitivity'], 4)}, specificity {number(result['specificity'], 4)}")
    print(f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for c, m in result["per_class"].items():
        print(f"{c:<16}{number(m['precision'], 4):>10}{number(m['recall'], 4):>10}{number(m['f1'], 4):>10}"
              f"{m['support']:>9}")
    if result.get("macro_f1") is not None:
        print(f"{'macro F1':<36}{number(result['macro_f1'], 4):>10}")
    print("Confusion matrix (rows true, columns predicted):")
    for c, row in zip(result["class_names"], result["confusion_matrix"], strict=True):
        print(f"  {c:<14}" + " ".join(f"{v:>6}" for v in row))
    if result.get("ece") is not None:
        print(f"Expected calibration error {number(result['ece'], 4)}"
              + (f" (temperature {result['temperature']:.3g})" if result.get("temperature") else " (uncalibrated)"))
    if result.get("calibration"):  # only with --site: the card's calibration is the default, as it always was
        print(f"Calibration: {result['calibration']} (the site's temperature and threshold, not the card's)")
    _print_ood_summary(result.get("ood") or {})
    for ordering in ("confidence", "unfamiliar"):  # selective prediction: what deferring 10% gains
        if line := deferral_sentence(result.get("selective"), ordering):
            print(line[0].upper() + line[1:])
    for s in result["skipped"]:
        print(f"skipped {safe_file_label(s['file'])}: {s['error']}")
    if result.get("recorded"):
        print(f"Recorded in {result['recorded']}")


def _print_overlap(overlap: Mapping | None) -> None:
    """Whether these are the model's training images (:func:`medclf_core.inference.overlap.training_overlap`),
    or the images the site calibration in use was fitted on, before any figure."""
    if not overlap:
        return
    if overlap.get("site_message"):
        print(f"WARNING: {overlap['site_message']}")
    if overlap.get("message"):
        print(f"WARNING: {overlap['message']}")
    elif overlap.get("basis") == "image hashes":
        print("Training images: none of these images is one the model was trained or tuned on (image hashes).")
    elif overlap.get("basis"):
        print("Training images: not the model's training dataset (dataset fingerprint; a partial overlap shows only "
              "by image hashes, which runs trained with this version keep).")
    else:
        print("Training images: not checked (the model card records no dataset fingerprint).")


def _print_ood_summary(ood: Mapping) -> None:
    if not ood.get("checked"):
        print("Out of distribution: not checked (the model has no ood.npz; run refit-trust)")
        return
    print(f"Out of distribution: {ood['n_flagged']} of {ood['n']} images flagged ({percent(ood['fraction_flagged'])})")
    if ood.get("coverage") is not None:
        print(f"  coverage (share not refused) {percent(ood['coverage'])}"
              + (f"; {ood['n_unfamiliar']} shown with a caution (unfamiliar)" if ood.get("n_unfamiliar") else ""))
    rest = ood.get("metrics_without_flagged")
    if rest and ood.get("n_flagged"):  # nothing refused: the figures above are already those
        print(f"  without them (n={rest['n']}): accuracy {number(rest['accuracy'], 4)}"
              + (f", ROC-AUC {number(rest['auc'], 4)}" if rest.get("auc") is not None else "")
              + (f", sensitivity {number(rest['sensitivity'], 4)}, specificity {number(rest['specificity'], 4)}"
                 if "sensitivity" in rest else ""))


def print_refit(res: Mapping) -> None:
    """What ``refit-trust`` fitted: the OOD gate's threshold and the temperature, with their effect."""
    o, c = res["ood"], res["calibration"]
    print(f"Refitted {res['run_dir']}: OOD gate on {o['n_train']} training images, threshold {o['threshold']:.4g} "
          f"({o['rule']}; flags {percent(o['val_fraction_flagged'])} of {o['n_val']} validation images)")
    print(f"Temperature {c['temperature']:.4g}: validation ECE {number(c['val_ece'][0], 4)} -> "
          f"{number(c['val_ece'][1], 4)}"
          + (f"; threshold {c['threshold_uncalibrated']:.4g} -> {res['threshold']:.4g} (same decisions)"
             if res.get("threshold") is not None else ""))


def print_site(rec: Mapping) -> None:
    """What ``recalibrate`` fitted and how it did on held-back halves, before (card) and after (site)."""
    counts = ", ".join(f"{c} {k}" for c, k in rec["n_per_class"].items())
    print(f"Site '{rec['site']}' for model {rec['model']}: {rec['n']} images ({counts}) from {rec['dataset']}")
    print(f"Temperature {rec['temperature']:.4g} ({rec['rule']['temperature']})")
    if rec.get("threshold") is not None:
        print(f"Threshold {number(rec['threshold'], 4)} on P({rec['positive_class']}) ({rec['rule']['threshold']})")
    for w in rec.get("warnings") or []:
        print(f"WARNING: {w['text']}")
    print(f"Checked {rec['rule']['check']}:")
    for label, m in (("before (card) ", rec["before"]), ("after (site)  ", rec["after"])):
        print(f"  {label}" + ";  ".join(metric_texts(m)))
    if rec.get("path"):
        print(f"Saved {rec['path']}; use it with --site {rec['site']}")
    elif rec.get("not_saved"):
        print(rec["not_saved"])


def _cam_text(r: Mapping) -> str:
    """`` -> map.png (faithfulness 0.42)`` for a result with a heat map, else ''."""
    if "cam" not in r:
        return ""
    return f" -> {r['cam']} (faithfulness {number(r.get('faithfulness'), 2)})"


def print_predictions(results: Sequence[Mapping], mimics: str | None = None) -> None:
    """One line per file: its headline (:func:`medclf_core.inference.results.headline`: the decision and
    P(positive class), borderline when it is) and every class's probability, capped at >99% / <1%; a refused
    (out-of-distribution) image says so and gives no decision; or the file's error. ``mimics``: the card's known
    limit (:func:`~medclf_core.registry.card_reading.finding_mimics`), printed once after the lines when any
    image got a finding."""
    from medclf_core.inference.results import class_word, headline

    findings = 0
    for r in results:
        name = r.get("file_label") or safe_file_label(r["file"])  # never the path: the one file-name rule
        if "error" in r:
            print(f"{name}: ERROR {r['error']}")
            continue
        probs = ", ".join(f"{class_word(r, c)} {probability_text(p)}" for c, p in r["probabilities"].items())
        if r.get("ood"):
            print(f"{name}: OUT OF DISTRIBUTION ({r['ood_reason']}); not a finding. "
                  f"Model output (not a finding): {probs}" + _cam_text(r) + _stored_text(r))
            continue
        h = headline(r)
        side = "" if h.threshold is None else \
            f", {'at or above' if h.probability >= h.threshold else 'below'} the threshold {percent(h.threshold)}"
        print(f"{name}: {h.title}{side} [{probs}]" + _cam_text(r) + _stored_text(r))
        if r.get("unfamiliar"):  # a finding shown with a caution (the "unfamiliar source" tier)
            print(f"  caution: {r.get('unfamiliar_reason') or 'unlike the training images'}")
        findings += h.finding
    if findings and mimics:
        print(f"Known limit of this model: {mimics}")


def _stored_text(r: Mapping) -> str:
    """`` -> stored in the PACS: SR, overlay`` for a result written back (``predict --pacs --store``), else ''."""
    stored = r.get("stored") or {}
    kinds = [name for key, name in (("sr", "SR"), ("sc", "heat-map overlay"), ("pdf", "PDF")) if stored.get(key)]
    return f" -> stored in the PACS: {', '.join(kinds)}" if kinds else ""


def print_exported(model: str, fmt: str, out) -> None:
    print(f"Exported {model} as {fmt} to {out} (card and EXPORT.md "
          + ("in its assets/ folder)" if fmt == "savedmodel" else "beside it)"))


def print_runs(runs: Sequence, unreadable: Sequence[Mapping]) -> None:
    """The registered runs, one line each (a run with too few test images marked), then the unreadable
    ones with their reason."""
    for r in runs:
        m, n = r.metrics, r.test_n
        cv = m.get("split") == CROSS_VALIDATION  # figures from out-of-fold predictions of every image
        toy = f"  (n < {MIN_RELIABLE_N}: too few {'' if cv else 'test '}images)" if r.is_toy else ""
        print(f"{r.name:<32} {r.architecture or '?':<11} {','.join(r.class_names):<28} "
              f"acc {number(m.get('accuracy'))} auc {number(m.get('auc'))} n {n if n is not None else '?'}"
              f"{' cross-validated' if cv else ''}  {r.created or ''}{toy}")
    for u in unreadable:
        print(f"{u['name']:<32} UNREADABLE: {u['reason']}")
    if not runs and not unreadable:
        print("No models registered yet.")
