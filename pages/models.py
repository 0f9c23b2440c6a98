"""Models: the registry, model cards, training curves, comparisons, download and delete.

Every figure is shown with its n (:func:`medclf_core.formatting.metric_with_n`); same-source figures (the
run's own test split, or out-of-fold predictions of all its images, marked "cross-validated", for a run on few
images) sit beside the evaluations recorded on other data. Runs whose figures rest on fewer than 30 images are
marked and listed after the others. A run whose card cannot be read is
listed with the reason and never breaks the page.
"""

from pathlib import Path

import pandas as pd
import streamlit as st

import app_ui
from medclf_core.reports import plots
from medclf_core.reports.tables import fitted_widths
from medclf_core.trust.card_facts import batch_and_learning_rate_text, ood_check_text, split_counts_text
from medclf_core.registry.evaluations import list_evaluations
from medclf_core.registry.performance import evaluation_figures
from medclf_core.errors import MedclfError, user_message
from medclf_core.formatting import MIN_RELIABLE_N, NOT_AVAILABLE, number, percent, rounded, source_tag
from medclf_core.reports.curves import has_epoch_curves, run_curves
from medclf_core.registry.export import FORMATS as EXPORT_FORMATS, export_archive
from medclf_core.io.atomic import read_json
from medclf_core.registry.store import MODEL_FILE, delete_run
from medclf_core.trust.gate_size import small_gate_notice
from medclf_core.trust.site_checks import site_row
from medclf_core.trust.sites import list_sites, load_site

app_ui.start_page()  # here too: a page opened first on a fresh server runs without streamlit_app.py
st.title("Models")
if deleted := st.session_state.pop("models_deleted", None):  # said at the top, where the eye is after the rerun
    st.success(app_ui.md_escape(f"Deleted the model '{deleted}'."))
    st.toast(app_ui.md_escape(f"Deleted the model '{deleted}'."))
all_runs, unreadable = app_ui.registry()


def _show_unreadable() -> None:
    if not unreadable:
        return
    st.warning(f"{len(unreadable)} model folder(s) cannot be used: a model card or model file is damaged, not "
               "valid or over the size limits (see each reason). "
               "They are not offered for prediction or evaluation.")
    st.dataframe(pd.DataFrame([{"folder": u["name"], "reason": u["reason"], "path": u["run_dir"]}
                               for u in unreadable]), hide_index=True, width="stretch")


if not all_runs:
    st.info(f"No models are registered in {app_ui.md_escape(app_ui.models_dir())} yet. Train one on the **Train** page.")
    _show_unreadable()
    st.stop()


def _per_member(value) -> str:
    """An ensemble's cards hold one value per member: '33 / 30 / 28'."""
    return " / ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _ensemble_text(ens: dict | None) -> str:
    if not ens:
        return "no (one model)"
    members = ens.get("member_validation") or []
    scores = ", ".join(f"{rounded((m or {}).get('accuracy'))}" for m in members)
    return (f"{ens.get('members')} models (seeds {', '.join(str(s) for s in ens.get('seeds') or [])}), "
            f"{ens.get('combination')}" + (f"; members' validation accuracy {scores}" if scores else ""))


def _evaluations(card) -> list[dict]:
    try:
        return list_evaluations(card.run_dir)
    except Exception:  # noqa: BLE001 - a bad record never breaks the page
        return []


def _other_source(evals: list[dict], label: str) -> str:
    """Each recorded other-source figure (``label`` of :func:`evaluation_figures`: "accuracy", "AUC") with its n:
    '0.640 (95% CI 0.57-0.70, n = 200) on hospital-b'."""
    shown = [f"{text} on {e['dataset']}" for e in evals if (text := evaluation_figures(e)[label]) != NOT_AVAILABLE]
    return "; ".join(shown) or "none recorded"


def _note(card) -> str:
    notes = []
    if card.is_toy:
        notes.append(f"toy run: {card.test_n if card.test_n is not None else 'unknown number of'} test images "
                     f"(< {MIN_RELIABLE_N}), figures not reliable")
    if card.is_bundled:
        notes.append("bundled")
    return "; ".join(notes)


# Real models first, toy runs (n < 30) after them, so a toy run's 1.000 never sits above a real model.
ordered = sorted(all_runs, key=lambda r: r.is_toy)
evaluations = {r.name: _evaluations(r) for r in ordered}
table = pd.DataFrame([{
    "name": r.name, "task": r.task, "architecture": r.architecture, "classes": r.classes_text,
    "n": r.test_n, "accuracy": r.format_metric("accuracy") + source_tag(r.metrics.get("split")),
    "AUC": r.format_metric("auc") + source_tag(r.metrics.get("split")),
    "other-source accuracy": _other_source(evaluations[r.name], "accuracy"),
    "other-source AUC": _other_source(evaluations[r.name], "AUC"),
    "note": _note(r), "created": (r.created or "").replace("T", " ")[:19],
} for r in ordered])
# every column as wide as its longest text, header included (medclf_core.reports.tables): none is cut off
st.dataframe(table, hide_index=True, width="stretch", column_config={
    **{c: st.column_config.Column(c, width=w) for c, w in fitted_widths(dict(table.items())).items()},
    "n": st.column_config.NumberColumn("n", width=fitted_widths({"n": table["n"]})["n"],
                                       help="images behind the same-source figures (the run's own held-out "
                                            "test split, or all its images when cross-validated)")})
st.caption(f"accuracy and AUC: the run's own held-out test split (same source as its training data), with n; "
           "marked (cross-validated): a run on few images, which keeps no test split, reports out-of-fold "
           "predictions of all its images instead. Other-source: evaluations recorded on other data. Runs with "
           f"fewer than {MIN_RELIABLE_N} images behind their figures are listed last.")
_show_unreadable()

by_name = {r.name: r for r in ordered}
names = list(by_name)
tab_card, tab_compare = st.tabs(["Model card", "Compare runs"])

with tab_card:
    wanted = st.session_state.get("models_selected") or (app_ui.current_card() or {}).get("name")
    name = st.selectbox("Model", names, index=names.index(wanted) if wanted in names else 0, key="models_pick")
    card = by_name[name]
    metrics = card.metrics
    st.subheader(app_ui.md_escape(name))
    c = st.columns(5)
    c[0].metric("Accuracy", percent(metrics.get("accuracy")))
    c[1].metric("ROC-AUC", number(metrics.get("auc")))
    c[2].metric("Sensitivity", percent(metrics.get("sensitivity")))
    c[3].metric("Specificity", percent(metrics.get("specificity")))
    c[4].metric("Images (cross-validated)" if card.is_cross_validated else "Test images",
                card.test_n if card.test_n is not None else "n/a")
    if card.is_toy:
        st.caption(f":warning: These figures rest on "
                   f"{card.test_n if card.test_n is not None else 'an unknown number of'} test images "
                   f"(fewer than {MIN_RELIABLE_N}): too few for a reliable figure.")
    if weak_gate := small_gate_notice(card.get("ood")):
        st.caption(f":warning: {app_ui.md_escape(weak_gate)}")
    st.caption((f"Same source, cross-validated: {card.figures_source}, the run's whole training data (the final "
                "model was fitted on all of them; there is no held-out test split)." if card.is_cross_validated else
                "Same source: the run's own held-out split of its training data.")
               + " Expect lower figures on images from other hospitals (see the evaluations on other data below).")
    ds, tr, cfg = card.dataset, card.training, card.config
    use = card.intended_use or {}
    positive = card.positive_class and card.class_word(card.positive_class)  # the card's words: "tumour" for "yes"
    facts = {
        "Task": card.task, "Classes": card.classes_text,
        "Positive class": card.positive_class_text + (f" ({positive})" if positive != card.positive_class else ""),
        "Operating threshold": (f"{percent(card.threshold)} on P({positive}) ({card.threshold_method})"
                                if card.threshold is not None else "argmax (the most probable class)"),
        **{f"{label} (same source)": card.format_metric(key) + source_tag(metrics.get("split"))
           for label, key in (("Accuracy", "accuracy"), ("ROC-AUC", "auc"), ("Sensitivity", "sensitivity"),
                              ("Specificity", "specificity"))},
        "Test-time augmentation": ", ".join(card.tta) or "none",
        "Seed ensemble": _ensemble_text(card.ensemble),
        "Architecture": card.architecture, "Input": " x ".join(str(v) for v in card.input_shape or []),
        "Intended use": use.get("summary") or "not stated",
        "Modalities / body parts": (", ".join(use.get("modalities") or []) or "any") + " / "
                                   + (", ".join(use.get("body_parts") or []) or "any"),
        "Not for": ", ".join(use.get("not_for") or []) or "not stated",
        "Training data": card.training_data or f"{ds.get('name')} ({ds.get('layout')})",
        "Pretrained weights": (card.pretrained if isinstance(card.pretrained, str)
                               else ", ".join(f"{k} {v}" for k, v in card.pretrained.items()) if card.pretrained
                               else "none recorded"),
        "Dataset": f"{ds.get('name')} ({ds.get('layout')})",
        "Images per split": split_counts_text(card),
        "Out-of-distribution check": ood_check_text(card),
        "Audit warnings": " ".join(str(w) for w in ds.get("audit_warnings") or []) or "none",  # sentences
        "Epochs": ("none: the head was fitted by cross-validation (the epochs setting does not apply)"
                   if card.is_cross_validated else f"{_per_member(tr.get('epochs_run'))} run, best "
                   f"{_per_member(tr.get('best_epoch'))} (of {cfg.get('epochs')})"),
        "Batch size / learning rate": batch_and_learning_rate_text(card),
        "Training time": f"{tr.get('seconds')} s on {tr.get('devices')}",
        "Versions": ", ".join(f"{k} {v}" for k, v in card.versions.items()),
        "Card schema": f"version {card.schema_version}",
        "Created": card.created, "Folder": card.run_dir,
    }
    # A static table wraps long values (paths, training data, versions); a data grid cuts them off at its width.
    app_ui.table(pd.DataFrame({"value": [str(v) for v in facts.values()]}, index=pd.Index(list(facts), name="")))

    st.markdown("**Evaluations on other data**")
    evals = evaluations[name]
    if evals:
        st.dataframe(pd.DataFrame([{
            "dataset": e["dataset"], "date": str(e["date"])[:10], "n": e["n"],
            "patients or cases": str(e.get("n_groups") or ""), **evaluation_figures(e),
            "fingerprint": str(e.get("fingerprint") or "")[:12],
        } for e in evals]), hide_index=True, width="stretch")
    else:
        st.caption("None recorded yet: `python -m medclf_core evaluate MODEL DATA --record` records one here.")

    st.markdown("**Site calibrations**")  # each site's own temperature and threshold (trust.sites), and its check
    sites = [site_row(load_site(card.run_dir, s)) for s in list_sites(card.run_dir)]
    if sites:
        st.dataframe(pd.DataFrame(sites), hide_index=True, width="stretch", key=f"models-sites-{name}",
                     column_config={"check": st.column_config.TextColumn(width="large")})
        st.caption("The card's figures above are at the card's own calibration; pick a site in the sidebar to use "
                   "its temperature and threshold on Predict and Evaluate.")
    else:
        st.caption("None: `medclf recalibrate MODEL DATA --site NAME`, or the Evaluate page after an upload, fits "
                   "one on a site's own labelled images.")

    history = read_json(card.run_dir, "history.json", default=[]) or []
    if isinstance(history, list) and history and all(isinstance(h, dict) for h in history):
        try:
            figure, why = run_curves(history, card)  # a cross-validated head: no epoch curves, and says so
        except Exception:  # noqa: BLE001 - a damaged history must not break the card
            figure, why = None, "The training history of this run cannot be drawn."
        if why:
            st.caption(app_ui.md_escape(why))
        if figure is not None:
            st.plotly_chart(figure, key=f"models-curves-{name}", config={"displayModeBar": False})
    with st.expander("The full model card (card.json)"):
        st.json(card.to_dict())

    model_path = Path(card.run_dir) / MODEL_FILE
    c1, c2 = st.columns(2)
    if model_path.is_file():
        size_mb = model_path.stat().st_size / 2**20
        c1.download_button(f"Download {MODEL_FILE} ({size_mb:.1f} MB)", data=lambda p=model_path: p.read_bytes(),
                           file_name=f"{name}.keras", mime="application/octet-stream", key=f"download-{name}")
    with st.expander("Export for use outside medclf (TensorFlow SavedModel or TensorFlow Lite)"):
        export_fmt = st.radio("Format", list(EXPORT_FORMATS), horizontal=True, key=f"export-format-{name}",
                              format_func={"savedmodel": "TensorFlow SavedModel (folder, zipped)",
                                           "tflite": "TensorFlow Lite (.tflite)"}.get)
        if st.button("Export", key=f"export-{name}"):
            with st.spinner(f"Exporting {app_ui.md_escape(name)} as {export_fmt} ..."):
                try:
                    st.session_state["models_export"] = (name, export_fmt, *export_archive(card.run_dir, export_fmt))
                except (MedclfError, OSError) as exc:
                    st.session_state.pop("models_export", None)
                    st.error(app_ui.md_escape(user_message(exc, "The model could not be exported")))
        done = st.session_state.get("models_export")
        if done and done[:2] == (name, export_fmt):
            st.download_button(f"Download {app_ui.md_escape(done[3])} ({len(done[2]) / 2**20:.1f} MB)", data=done[2],
                               file_name=done[3], mime="application/zip", key=f"export-download-{name}")
        st.caption("The zip holds the raw model (pixels 0-255 in, softmax out) with its model card and EXPORT.md "
                   "(and ood.npz when the model has an out-of-distribution gate). The card's calibration "
                   "temperature, test-time views and threshold are not inside the exported model: EXPORT.md says "
                   "how to apply them.")
    if st.session_state.get("confirm_delete") != name:
        if c2.button("Delete this model ...", key=f"delete-{name}"):
            st.session_state["confirm_delete"] = name
            st.rerun()
    else:
        typed_ok = True
        if card.is_bundled:
            st.warning(f"**{app_ui.md_escape(name)}** is a model bundled with medclf. Delete it and its card, history and "
                       "evaluation? This cannot be undone: it comes back only with a fresh copy of the repository.")
            typed = st.text_input(f"Type the model's name ({app_ui.md_escape(name)}) to confirm",
                                  key=f"confirm-name-{name}")
            typed_ok = typed.strip() == name
        else:
            st.warning(f"Delete the model **{app_ui.md_escape(name)}** and its card, history and evaluation? This cannot be undone.")
        d1, d2, _ = st.columns([1, 1, 4])
        if d1.button("Yes, delete it", type="primary", key=f"confirm-delete-{name}", disabled=not typed_ok):
            if not typed_ok:  # the button is disabled, but a stale click must not get through either
                st.error(app_ui.md_escape(f"Type the model's name ({name}) to delete it."))
            else:
                try:
                    delete_run(card.run_dir)
                except (MedclfError, OSError) as exc:
                    st.error(app_ui.md_escape(user_message(exc, "The model could not be deleted")))
                else:
                    app_ui.forget_models()
                    st.session_state.pop("confirm_delete", None)
                    st.session_state.pop("models_selected", None)
                    st.session_state["models_deleted"] = name
                    st.rerun()
        if d2.button("Keep it", key=f"keep-{name}"):
            st.session_state.pop("confirm_delete", None)
            st.rerun()

with tab_compare:
    default = names[:2] if len(names) >= 2 else names
    chosen = st.multiselect("Runs to compare (two or more)", names, default=default, key="models_compare")
    if len(chosen) < 2:
        st.info("Choose at least two runs.")
    else:
        histories = {n: h if isinstance(h := read_json(by_name[n].run_dir, "history.json", default=[]), list) else []
                     for n in chosen}
        curves = {n: h for n, h in histories.items() if has_epoch_curves(h)}
        if curves:
            st.plotly_chart(plots.training_curves(curves, height=400), key="compare-curves",
                            config={"displayModeBar": False})
        if without := [n for n in chosen if n not in curves]:
            st.caption(app_ui.md_escape(f"No epoch curves for {', '.join(without)}: a head fitted by "
                                        "cross-validation trains no epochs, or no history was recorded."))
        rows = {}
        for n in chosen:
            r = by_name[n]
            m = r.metrics or {}
            rows[n] = {"task": r.task, "architecture": r.architecture,
                       "input": " x ".join(str(v) for v in r.input_shape or []),
                       "epochs run": _per_member(r.training.get("epochs_run")),
                       "accuracy": rounded(m.get("accuracy")),
                       "balanced accuracy": rounded(m.get("balanced_accuracy")), "AUC": rounded(m.get("auc")),
                       "macro F1": rounded(m.get("macro_f1")), "sensitivity": rounded(m.get("sensitivity")),
                       "specificity": rounded(m.get("specificity")), "threshold": rounded(r.get("threshold")),
                       "figures on": r.figures_source, "reliable (n >= 30)": "no" if r.is_toy else "yes",
                       "other-source accuracy": _other_source(evaluations[n], "accuracy"),
                       "created": (r.created or "")[:19]}
        compared = pd.DataFrame(rows).astype(str)
        widths = fitted_widths({"_index": compared.index, **dict(compared.items())})  # the row labels too
        st.dataframe(compared, width="stretch",
                     column_config={c: st.column_config.Column(width=w) for c, w in widths.items()})
