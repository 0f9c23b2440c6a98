"""Command-line twin of the app: ``python -m medclf_core {audit,train,evaluate,predict,list,refit-trust,recalibrate,
export}``.

One function per command: it calls the core and hands the result to :mod:`medclf_core.cli.console`.
:func:`main` is the ``medclf`` entry point (``pyproject.toml``): it parses the arguments
(:mod:`medclf_core.cli.parser`) and runs the command. Results go to stdout (with ``--json``, the last
line of stdout is one JSON value); progress bars and messages go to stderr. Bad input ends with a
one-line message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from medclf_core.cli import console
from medclf_core.cli.parser import parse_command_line, train_config_from_args, tta_views
from medclf_core.errors import MedclfError


def main(argv: list[str] | None = None) -> int:
    """Run one ``medclf`` command; the exit status: 0 done, 1 refused (one-line message), 2 bad
    arguments or a rejected input file, 130 interrupted."""
    _quiet_tensorflow()
    console.log_to_terminal()
    args = parse_command_line(argv)
    try:
        return COMMANDS[args.command](args)
    except MedclfError as exc:
        console.message(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        console.message("interrupted")
        return 130


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore", message=".*shuffle.*")


def cmd_audit(args) -> int:
    from medclf_core.data.audit import audit_dataset
    from medclf_core.data.scan import scan_dataset

    index = scan_dataset(args.data)
    report = audit_dataset(index, near_duplicate_distance=args.near_duplicate_distance,
                           progress=console.progress_bar("Reading images", not args.no_progress))
    if args.json:
        console.print_json({"root": index.root, "presplit": index.presplit, **report.to_dict()})
    else:
        console.print_audit(index, report)
    return 0


def cmd_train(args) -> int:
    from medclf_core.registry.store import read_card
    from medclf_core.training import train
    from medclf_core.training.events import EventLog

    cfg = train_config_from_args(args).validate(args.models_dir)
    outcome: dict = {}
    listeners = [lambda ev: outcome.update(ev) if ev["event"] == "done" else None]
    if not args.no_progress:
        listeners.append(console.TrainProgressPrinter())
    run_dir = train(cfg, models_dir=args.models_dir, events=EventLog(args.events, listeners))
    if outcome.get("registered") is False:  # a non-chief worker of a multi-worker run: the chief registers
        if args.json:
            console.print_json({"run_dir": str(run_dir), "name": run_dir.name, "registered": False})
        else:
            console.print_worker_finished(run_dir)
        return 0
    card = read_card(run_dir)
    if args.json:
        console.print_json({"run_dir": str(run_dir), **{k: card[k] for k in (
            "name", "class_names", "architecture", "threshold", "metrics", "validation_metrics")}})
    else:
        console.print_trained(card, run_dir)
    return 0


def cmd_evaluate(args) -> int:
    from medclf_core.data.split import pattern_problem
    from medclf_core.inference.folder import evaluate_folder
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(args.model, args.models_dir, tta=tta_views(args.tta), site=args.site)
    if args.group_pattern and (why := pattern_problem(args.group_pattern)):
        console.message(f"error: --group-pattern {why}")
        return 2
    result = evaluate_folder(predictor, args.data, args.split, bootstrap=args.bootstrap,
                             progress=console.progress_bar("Evaluating", not args.no_progress),
                             group_pattern=args.group_pattern)
    if args.record:
        result["recorded"] = str(_record(predictor, result, args.data, args.group_pattern))
    if args.json:
        console.print_json(result)
    else:
        console.print_evaluation(result)
    return 0


def _record(predictor, result: dict, data, group_pattern: str | None = None) -> Path:
    """Keep this evaluation beside the model (``evaluations/``): the card and the app show it as other-source data."""
    from medclf_core.data.fingerprint import dataset_fingerprint
    from medclf_core.registry.evaluations import record_evaluation

    ood = result.get("ood") or {}
    return record_evaluation(predictor.card["run_dir"], result, dataset=Path(data).name or str(data),
                             fingerprint=dataset_fingerprint(data, split=result["split"]),
                             extra={"ood": {k: ood.get(k) for k in ("checked", "n_flagged", "fraction_flagged", "n_unfamiliar")},
                                    "data_path": str(data),
                                    **({"n_groups": result["n_groups"], "group_pattern": group_pattern}
                                       if result.get("n_groups") else {})})


def cmd_refit_trust(args) -> int:
    from medclf_core.training.refit import refit_trust
    from medclf_core.trust.ood import refuse_factor_problem

    if args.refuse_factor is not None and (why := refuse_factor_problem(args.refuse_factor)):
        console.message(f"error: --refuse-factor {why}")
        return 2
    res = refit_trust(args.model, args.data, models_dir=args.models_dir, percentile=args.percentile,
                      refuse_factor=args.refuse_factor,
                      progress=console.progress_bar("Reading images", not args.no_progress))
    if args.json:
        console.print_json(res)
    else:
        console.print_refit(res)
    return 0


def cmd_recalibrate(args) -> int:
    """Fit, cross-fit and save a site's calibration (medclf_core.inference.sites.recalibrate)."""
    from medclf_core.inference.predictor import Predictor
    from medclf_core.inference.sites import recalibrate
    from medclf_core.registry.names import check_site_name

    if not 0.0 < args.target_sensitivity < 1.0:
        console.message("error: --target-sensitivity must be between 0 and 1 (e.g. 0.95)")
        return 2
    check_site_name(args.site)  # before the model loads
    predictor = Predictor.from_run(args.model, args.models_dir)
    rec = recalibrate(predictor, args.data, args.site, split=args.split, target_sensitivity=args.target_sensitivity,
                      bootstrap=args.bootstrap, progress=console.progress_bar("Reading images", not args.no_progress),
                      force=args.force)
    if args.json:
        console.print_json(rec)
    else:
        console.print_site(rec)
    return 1 if rec.get("not_saved") else 0


def cmd_predict(args) -> int:
    """Classify the files; with ``--cam`` and/or ``--report``, each readable file is decoded once and
    explained once, and that one map serves both its overlay PNG and its PDF report."""
    from medclf_core.inference.predictor import Predictor
    from medclf_core.inference.results import exported
    from medclf_core.registry.card_reading import finding_mimics

    if bool(args.files) == bool(args.pacs) or bool(args.pacs) != bool(args.study):
        console.message("error: give image files, or --pacs URL with --study UID (not both)")
        return 2
    predictor = Predictor.from_run(args.model, args.models_dir, tta=tta_views(args.tta), site=args.site)
    if args.pacs:
        return _predict_pacs(predictor, args)
    drawn = bool(args.cam or args.report)
    decoded: dict | None = {} if drawn else None  # kept only when drawn (memory)
    results = predictor.predict_files(args.files, decoded=decoded)
    identifying = _label_files(results, decoded or {})
    explained = _explain_readable(predictor, results, decoded, args.cam_method, cam=bool(args.cam)) if drawn else {}
    if args.cam:
        _write_cams(results, explained, Path(args.cam), args.opacity, identifying)
    if args.report:  # one PDF per readable image (medclf_core.reports.pdf)
        from medclf_core.reports.pdf import write_reports

        written = write_reports(predictor, results, args.report, method=args.cam_method, opacity=args.opacity,
                                decoded=decoded, explanations=explained)
        console.message(f"Wrote {len(written)} PDF report(s) to {args.report}")
    _say_calibration(predictor, args)
    if args.json:  # a refused image's label is empty (medclf_core.inference.results.exported)
        console.print_json([exported(r) for r in results])
    else:
        console.print_predictions(results, finding_mimics(predictor.card))
    return 2 if any("error" in r for r in results) else 0


def _say_calibration(predictor, args) -> None:
    if predictor.site is not None:
        console.message(f"Calibration: site {args.site} (its temperature and threshold, not the card's)")


def _predict_pacs(predictor, args) -> int:
    """``predict --pacs``: the study's image instances through the same path as files; with ``--store`` the
    results written back (exit 1 when the write failed: the results are still printed)."""
    from medclf_core.inference.results import exported
    from medclf_core.pacs.client import PacsConnection
    from medclf_core.pacs.flow import predict_from_pacs
    from medclf_core.registry.card_reading import finding_mimics

    conn = PacsConnection.from_env(args.pacs)
    notes: list[str] = []
    results = predict_from_pacs(predictor, conn, args.study, args.series, store=args.store,
                                max_instances=args.max_instances, method=args.cam_method, opacity=args.opacity,
                                report=bool(args.report), notes=notes,
                                progress=console.progress_bar("Reading from the PACS", not args.no_progress))
    for note in notes:
        console.message(f"note: {note}")
    _say_calibration(predictor, args)  # the SRs written name it too (pacs.writeback.calibration_words)
    failed = next((r["store_error"] for r in results if "store_error" in r), None)
    if failed:
        console.message(f"error: {failed}")
    if args.json:
        console.print_json([exported(r) for r in results])
    else:
        console.print_predictions(results, finding_mimics(predictor.card))
    return 1 if failed else (2 if any("error" in r for r in results) else 0)


def _explain_readable(predictor, results: list[dict], decoded: dict, method: str, *, cam: bool) -> dict:
    """``{index: HeatMap}`` (:meth:`Predictor.explain`) of every readable result, in one batch: the map
    of the class each result names, scored by a deletion curve (faithfulness). With ``cam`` a
    model without heat maps is an error; for reports alone such a model gives ``{index: None}`` (each
    report then says it has no map)."""
    readable = [i for i, r in enumerate(results) if "error" not in r and i in decoded]
    if not readable:
        return {}
    images = [decoded[i] for i in readable]
    labels = [results[i]["label"] for i in readable]
    if cam:
        return dict(zip(readable, predictor.explain(images, method, labels, faithfulness=True), strict=True))
    try:  # scored too: the report names the map's faithfulness
        maps = predictor.explain(images, method, labels, faithfulness=True)
    except Exception:  # noqa: BLE001 - no heat map for this model: the reports say so
        maps = [None] * len(readable)
    return dict(zip(readable, maps, strict=True))


def _label_files(results: list[dict], decoded: dict) -> list[list[str]]:
    """Give each result its ``file_label`` (the one file-name rule, :func:`medclf_core.io.deid.safe_file_label`,
    with that file's own header identifiers) and return those identifiers per result (never printed)."""
    from medclf_core.io.deid import file_identifiers, safe_file_label

    values = []
    for i, r in enumerate(results):
        img = decoded.get(i)
        own = list(img.dicom.identifying) if img is not None and img.dicom is not None else file_identifiers(r["file"])
        r["file_label"] = safe_file_label(r["file"], own)
        values.append(own)
    return values


def _write_cams(results: list[dict], explained: dict, out_dir: Path, opacity: float,
                identifying: list[list[str]]) -> None:
    """One overlay PNG per explained result in ``out_dir``, named ``<result index>_<safe stem>_cam.png``
    (:func:`medclf_core.io.deid.safe_output_name`, as the reports); each result gets its path, method and
    faithfulness."""
    from medclf_core.explain.render import save_png
    from medclf_core.io.deid import safe_output_name

    out_dir.mkdir(parents=True, exist_ok=True)
    for i, ex in explained.items():
        r = results[i]
        target = out_dir / safe_output_name(r["file"], identifying[i], index=i, suffix="_cam.png")
        save_png(target, ex.overlay(opacity))
        r["cam"] = str(target)
        r["cam_method"] = ex.method
        r["faithfulness"] = ex.faithfulness
        if ex.faithfulness is None and ex.deletion and ex.deletion.get("note"):
            r["faithfulness_note"] = ex.deletion["note"]


def cmd_export(args) -> int:
    """Export a run as a TensorFlow SavedModel folder or a .tflite file, with its card (medclf_core.registry.export)."""
    from medclf_core.registry.export import export_model

    out = export_model(args.model, args.format, args.output, models_dir=args.models_dir, overwrite=args.overwrite)
    if args.json:
        console.print_json({"model": args.model, "format": args.format, "output": str(out)})
    else:
        console.print_exported(args.model, args.format, out)
    return 0


def cmd_export_lite(args) -> int:
    """Write each named run's (or, with --all, every run's; with --stale, only those whose files are missing or
    do not match) LiteRT files; a run without a fast path is said so."""
    from medclf_core.inference.lite import lite_mismatch
    from medclf_core.inference.lite_export import NO_FAST_PATH, export_lite
    from medclf_core.registry.store import resolve_run, scan_registry

    def stale(name) -> bool:  # current: files that match the model, or "no fast path" recorded for this model file
        why, sidecar = lite_mismatch(resolve_run(name, args.models_dir))
        return why is not None and not (sidecar or {}).get(NO_FAST_PATH)

    names = [r["run_dir"] for r in scan_registry(args.models_dir)[0]] if args.all else args.models
    if not names:
        raise MedclfError("Name at least one model, or pass --all.")
    if args.stale:
        names = [n for n in names if stale(n)]
    done = {str(n): export_lite(n, args.models_dir) for n in names}
    if args.json:
        console.print_json(done)
    else:
        for name, out in done.items():
            print(f"{name}: {out}")
    return 0


def cmd_list(args) -> int:
    """Every run; a run whose card is damaged or not valid is listed as unreadable, with the reason."""
    from medclf_core.registry.store import scan_registry

    runs, unreadable = scan_registry(args.models_dir)
    if args.json:
        console.print_json([{**{k: r[k] for k in ("name", "task", "architecture", "class_names", "metrics", "created",
                                                  "run_dir", "schema_version")},
                             "n": r.test_n, "bundled": r.is_bundled, "unreadable": False} for r in runs]
                           + [{"name": u["name"], "run_dir": u["run_dir"], "unreadable": True, "reason": u["reason"]}
                              for u in unreadable])
    else:
        console.print_runs(runs, unreadable)
    return 0


COMMANDS = {"audit": cmd_audit, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "refit-trust": cmd_refit_trust,
            "recalibrate": cmd_recalibrate, "export": cmd_export,
            "export-lite": cmd_export_lite, "list": cmd_list}
