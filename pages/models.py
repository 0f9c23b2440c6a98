"""Models: the registry, model cards, training curves, comparisons, download and delete."""

from pathlib import Path

import pandas as pd
import streamlit as st

import app_ui
from medclf_core import plots
from medclf_core.errors import MedclfError
from medclf_core.registry import MODEL_FILE, delete_run, read_json

st.title("Models")
all_runs = app_ui.runs()
if not all_runs:
    st.info(f"No models are registered in `{app_ui.models_dir()}` yet. Train one on the **Train** page.")
    st.stop()


def _num(m: dict | None, key: str):
    v = (m or {}).get(key)
    return round(v, 3) if isinstance(v, float) else v


def _per_member(value) -> str:
    """An ensemble's cards hold one value per member: '33 / 30 / 28'."""
    return " / ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _ensemble_text(ens: dict | None) -> str:
    if not ens:
        return "no (one model)"
    members = ens.get("member_validation") or []
    scores = ", ".join(f"{_num(m, 'accuracy')}" for m in members)
    return (f"{ens.get('members')} models (seeds {', '.join(str(s) for s in ens.get('seeds') or [])}), "
            f"{ens.get('combination')}" + (f"; members' validation accuracy {scores}" if scores else ""))


table = pd.DataFrame([{
    "name": r["name"], "task": r.get("task"), "architecture": r.get("architecture"),
    "classes": ", ".join(r.get("class_names") or []), "accuracy": _num(r.get("metrics"), "accuracy"),
    "AUC": _num(r.get("metrics"), "auc"), "created": (r.get("created") or "").replace("T", " ")[:19],
} for r in all_runs])
st.dataframe(table, hide_index=True, width="stretch")

by_name = {r["name"]: r for r in all_runs}
names = list(by_name)
tab_card, tab_compare = st.tabs(["Model card", "Compare runs"])

with tab_card:
    wanted = st.session_state.get("models_selected") or (app_ui.current_card() or {}).get("name")
    name = st.selectbox("Model", names, index=names.index(wanted) if wanted in names else 0, key="models_pick")
    card = by_name[name]
    metrics = card.get("metrics") or {}
    st.subheader(name)
    c = st.columns(5)
    c[0].metric("Accuracy", app_ui.fmt(metrics.get("accuracy"), pct=True))
    c[1].metric("ROC-AUC", app_ui.fmt(metrics.get("auc")))
    c[2].metric("Sensitivity", app_ui.fmt(metrics.get("sensitivity"), pct=True))
    c[3].metric("Specificity", app_ui.fmt(metrics.get("specificity"), pct=True))
    c[4].metric("Test images", metrics.get("n", "n/a"))
    ds = card.get("dataset") or {}
    tr = card.get("training") or {}
    cfg = card.get("config") or {}
    facts = {
        "Task": card.get("task"), "Classes": ", ".join(card.get("class_names") or []),
        "Positive class": card.get("positive_class"),
        "Operating threshold": (f"{card['threshold']:.3f} on P({card.get('positive_class')}) "
                                f"({card.get('threshold_method')})" if card.get("threshold") is not None else "argmax"),
        "Test-time augmentation": ", ".join(card.get("tta") or []) or "none",
        "Seed ensemble": _ensemble_text(card.get("ensemble")),
        "Architecture": card.get("architecture"), "Input": " x ".join(str(v) for v in card.get("input_shape") or []),
        "Dataset": f"{ds.get('name')} ({ds.get('layout')})", "Images per split": "; ".join(f"{split}: " + ", ".join(f"{c} {n}" for c, n in per.items())
                                     for split, per in (ds.get("counts") or {}).items()),
        "Audit warnings": "; ".join(ds.get("audit_warnings") or []) or "none",
        "Epochs": f"{_per_member(tr.get('epochs_run'))} run, best {_per_member(tr.get('best_epoch'))} "
                  f"(of {cfg.get('epochs')})",
        "Batch size / learning rate": f"{cfg.get('batch_size')} / {cfg.get('learning_rate')}",
        "Training time": f"{tr.get('seconds')} s on {tr.get('devices')}",
        "Versions": ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items()),
        "Created": card.get("created"), "Folder": card.get("run_dir"),
    }
    st.dataframe(pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]}), hide_index=True,
                 width="stretch", height=35 * (len(facts) + 1) + 3)
    ci = metrics.get("ci95") or {}
    if ci:
        st.caption("95% intervals: " + "; ".join(f"{k} {v[0]:.3f}-{v[1]:.3f}" for k, v in ci.items() if v))
    history = read_json(card["run_dir"], "history.json", default=[]) or []
    if history:
        st.plotly_chart(plots.training_curves(history), key=f"models-curves-{name}", config={"displayModeBar": False})
    with st.expander("The full model card (card.json)"):
        st.json(card)

    model_path = Path(card["run_dir"]) / MODEL_FILE
    c1, c2 = st.columns(2)
    if model_path.is_file():
        size_mb = model_path.stat().st_size / 2**20
        c1.download_button(f"Download {MODEL_FILE} ({size_mb:.1f} MB)", data=lambda p=model_path: p.read_bytes(),
                           file_name=f"{name}.keras", mime="application/octet-stream", key=f"download-{name}")
    if st.session_state.get("confirm_delete") != name:
        if c2.button("Delete this model ...", key=f"delete-{name}"):
            st.session_state["confirm_delete"] = name
            st.rerun()
    else:
        st.warning(f"Delete the model **{name}** and its card, history and evaluation? This cannot be undone.")
        d1, d2, _ = st.columns([1, 1, 4])
        if d1.button("Yes, delete it", type="primary", key=f"confirm-delete-{name}"):
            try:
                delete_run(card["run_dir"])
            except (MedclfError, OSError) as exc:
                st.error(f"The model could not be deleted: {exc}")
            else:
                app_ui.forget_models()
                st.session_state.pop("confirm_delete", None)
                st.session_state.pop("models_selected", None)
                st.session_state["models_deleted"] = name
                st.rerun()
        if d2.button("Keep it", key=f"keep-{name}"):
            st.session_state.pop("confirm_delete", None)
            st.rerun()
    if st.session_state.get("models_deleted"):
        st.success(f"Deleted the model '{st.session_state.pop('models_deleted')}'.")

with tab_compare:
    default = names[:2] if len(names) >= 2 else names
    chosen = st.multiselect("Runs to compare (two or more)", names, default=default, key="models_compare")
    if len(chosen) < 2:
        st.info("Choose at least two runs.")
    else:
        histories = {n: read_json(by_name[n]["run_dir"], "history.json", default=[]) or [] for n in chosen}
        st.plotly_chart(plots.training_curves(histories, height=400), key="compare-curves",
                        config={"displayModeBar": False})
        rows = {}
        for n in chosen:
            r = by_name[n]
            m = r.get("metrics") or {}
            rows[n] = {"task": r.get("task"), "architecture": r.get("architecture"),
                       "input": " x ".join(str(v) for v in r.get("input_shape") or []),
                       "epochs run": _per_member((r.get("training") or {}).get("epochs_run")),
                       "accuracy": _num(m, "accuracy"), "balanced accuracy": _num(m, "balanced_accuracy"),
                       "AUC": _num(m, "auc"), "macro F1": _num(m, "macro_f1"), "sensitivity": _num(m, "sensitivity"),
                       "specificity": _num(m, "specificity"), "threshold": _num(r, "threshold"),
                       "test images": m.get("n"), "created": (r.get("created") or "")[:19]}
        st.dataframe(pd.DataFrame(rows).astype(str), width="stretch")
