"""Evaluate: metrics with intervals, confusion matrices, ROC, a live threshold, and the mistakes."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import app_ui
from medclf_core import explain, jobs, plots, trust
from medclf_core.errors import MedclfError
from medclf_core.evaluation import evaluate_probabilities
from medclf_core.images import load_image
from medclf_core.inference import predict_folder
from medclf_core.registry import read_json

MAX_MISTAKES = 12
SPLITS = {"auto": "auto (test folder if the dataset is pre-split, else all images)", "all": "all images",
          "test": "test", "val": "val", "train": "train"}

st.title("Evaluate")
all_runs = app_ui.runs()
if not all_runs:
    st.info("No model is available yet. Train one on the **Train** page.")
    st.stop()
by_name = {r["name"]: r for r in all_runs}
shared = app_ui.current_card()
names = list(by_name)
c1, c2 = st.columns([1, 2])
name = c1.selectbox("Model", names, index=names.index(shared["name"]) if shared and shared["name"] in names else 0,
                    key="eval_model")
card = by_name[name]
kind = c2.radio("Dataset", ["own", "folder"], horizontal=True, key="eval_source",
                format_func={"own": "the model's own test split", "folder": "another dataset folder or zip"}.get)

data = None
if kind == "own":
    data = jobs.run_test_predictions(card, read_json(card["run_dir"], "evaluation.json"))
    if data is None:
        st.info("This model has no stored test-split predictions; evaluate it on a dataset folder instead.")
        st.stop()
    data = {**data, "probs": trust.stored_probabilities(card, data["probs"])}  # calibrated like every prediction
    st.caption(f"{len(data['y_true'])} images of the {data['split']} split that training held out "
               f"(dataset `{data['dataset']}`).")
else:
    c1, c2, c3 = st.columns([3, 2, 1])
    folder = c1.text_input("Dataset folder or zip on the server", key="eval_folder",
                           placeholder="root/<class>/<images> or root/test/<class>/<images>")
    split = c2.selectbox("Split", list(SPLITS), format_func=SPLITS.get, key="eval_split")
    c3.write("")
    go = c3.button("Evaluate", type="primary", key="eval_go")
    key = (card["run_dir"], card.get("created"), folder.strip(), split)
    store = st.session_state.setdefault("_eval_data", {})
    if go and folder.strip():
        predictor, lock = app_ui.load_predictor(card)
        try:
            with st.spinner("Reading and classifying the images ..."), lock:
                store.clear()
                store[key] = predict_folder(predictor, folder.strip(), split)
        except MedclfError as exc:
            st.error(f"This dataset cannot be evaluated: {app_ui.md_escape(exc)}")
        except Exception as exc:  # noqa: BLE001
            st.error(f"This dataset cannot be evaluated ({type(exc).__name__}).")
    elif go:
        st.warning("Type the path of a dataset folder or zip first.")
    data = store.get(key)
    if data is None:
        st.info("Choose a folder and press **Evaluate**.")
        st.stop()
    if data["skipped"]:
        with st.expander(f"{len(data['skipped'])} file(s) could not be read and were skipped"):
            st.dataframe(pd.DataFrame(data["skipped"]), hide_index=True, width="stretch")

class_names = data["class_names"]
y_true, probs = data["y_true"], data["probs"]
threshold = card.get("threshold")
positive = class_names.index(card["positive_class"]) if card.get("positive_class") in class_names else None
binary = len(class_names) == 2 and positive is not None


@st.cache_data(show_spinner="Computing metrics and bootstrap intervals ...", max_entries=16)
def metrics_for(y, p, names, thr, pos):
    return evaluate_probabilities(np.asarray(y), np.asarray(p), list(names), threshold=thr, positive=pos,
                                  bootstrap=1000)


m = metrics_for(tuple(y_true.tolist()), tuple(map(tuple, probs.tolist())), tuple(class_names), threshold, positive)

st.subheader(f"{name} on {len(y_true)} images")
left, right = st.columns(2)
with left:
    st.markdown("**Metrics** (95% bootstrap intervals)")
    st.dataframe(pd.DataFrame(plots.metrics_table(m)), hide_index=True, width="stretch")
with right:
    st.markdown("**Per class**")
    st.dataframe(pd.DataFrame(m["per_class"]).T.round(3), width="stretch")


@st.cache_data(show_spinner="Computing the metrics without the flagged images ...", max_entries=16)
def ood_for(y, p, flags, names, thr, pos):
    return trust.ood_block(np.asarray(y), np.asarray(p), list(flags), list(names), threshold=thr, positive=pos,
                           bootstrap=1000)


st.subheader("Out-of-distribution check")
flags = data.get("ood")
if flags is None:
    st.info("The stored test-split predictions carry no out-of-distribution flags: evaluate the model on a "
            "dataset folder to see how many images its gate flags.")
else:
    ob = ood_for(tuple(y_true.tolist()), tuple(map(tuple, probs.tolist())), tuple(flags), tuple(class_names),
                 threshold, positive)
    if not ob["checked"]:
        st.info("Not checked: this model has no out-of-distribution gate (ood.npz). "
                "`python -m medclf_core refit-trust` adds one.")
    else:
        st.markdown(f"**{ob['n_flagged']} of {ob['n']} images** ({ob['fraction_flagged']:.1%}) do not look like "
                    "the images this model was trained on; the metrics above are over every image.")
        rest = ob["metrics_without_flagged"]
        if rest is None:
            st.warning("Every image was flagged: there are no metrics without them.")
        else:
            both = pd.DataFrame(plots.metrics_table(m)).set_index("metric")
            wo = pd.DataFrame(plots.metrics_table(rest)).set_index("metric")
            side = pd.DataFrame({"all images": both["value"], "all: 95% interval": both["95% interval"],
                                 "without the flagged": wo["value"].reindex(both.index),
                                 "without: 95% interval": wo["95% interval"].reindex(both.index)})
            st.dataframe(side.reset_index(), hide_index=True, width="stretch", key="ood-metrics")

st.subheader("Calibration")
ece = m.get("ece")
temperature = trust.temperature_of(card)
st.caption(f"Expected calibration error {app_ui.fmt(ece)} (top class, 15 bins): how far the model's confidence "
           "is from its accuracy. "
           + (f"The probabilities are temperature-scaled (T = {temperature:.2f}, fitted on the validation split)."
              if temperature else "This model's probabilities are not calibrated (no temperature in its card)."))
st.plotly_chart(plots.reliability_figure(y_true, probs), key="reliability", config={"displayModeBar": False})

c1, c2 = st.columns(2)
c1.plotly_chart(plots.confusion_matrix_figure(m["confusion_matrix"], class_names, title="Confusion matrix (counts)"),
                key="cm-counts", config={"displayModeBar": False})
c2.plotly_chart(plots.confusion_matrix_figure(m["confusion_matrix"], class_names, normalised=True,
                                              title="Confusion matrix (row-normalised: recall per class)"),
                key="cm-norm", config={"displayModeBar": False})


@st.fragment
def threshold_panel() -> None:
    """Sensitivity, specificity and the confusion matrix at a threshold chosen with the slider."""
    pos_name = class_names[positive]
    start = float(threshold if threshold is not None else 0.5)
    t = st.slider(f"Threshold on P({pos_name})", 0.0, 1.0, round(start, 3), 0.001, format="%.3f",
                  key=f"eval-thr-{name}",
                  help=f"The model's operating threshold is {start:.2f}, chosen on its validation split.")
    tm = plots.threshold_metrics(y_true, probs, t, positive)
    c1, c2, c3 = st.columns(3)
    c1.metric("Sensitivity", app_ui.fmt(tm["sensitivity"], pct=True))
    c2.metric("Specificity", app_ui.fmt(tm["specificity"], pct=True))
    c3.metric("Accuracy", app_ui.fmt(tm["accuracy"], pct=True))
    left, right = st.columns(2)
    left.plotly_chart(plots.confusion_matrix_figure(tm["confusion_matrix"], class_names,
                                                    title=f"Confusion matrix at threshold {t:.3f}"),
                      key="cm-threshold", config={"displayModeBar": False})
    if m.get("roc"):
        spec = tm["specificity"]
        point = (1 - spec, tm["sensitivity"]) if spec is not None and tm["sensitivity"] is not None else None
        right.plotly_chart(plots.roc_figure(m["roc"], auc=m.get("auc"), operating_point=point), key="roc",
                           config={"displayModeBar": False})


if binary:
    st.subheader("Operating threshold")
    threshold_panel()
elif m.get("roc"):
    st.plotly_chart(plots.roc_figure(m["roc"], auc=m.get("auc")), key="roc-multi", config={"displayModeBar": False})

# ---- the mistakes, with where the model looked
st.subheader("Misclassified images")
y_pred = plots.threshold_metrics(y_true, probs, threshold, positive)["y_pred"]
wrong = np.flatnonzero(y_pred != y_true)
if not len(wrong):
    st.success("No image was misclassified at the model's threshold.")
else:
    st.caption(f"{len(wrong)} of {len(y_true)} images are misclassified at the model's threshold"
               + (f"; showing the first {MAX_MISTAKES}" if len(wrong) > MAX_MISTAKES else "")
               + ". The heat map (Grad-CAM) shows what drove the wrong prediction.")
    shown = wrong[:MAX_MISTAKES]
    pixels, missing = [], []
    for i in shown:
        try:
            pixels.append(load_image(data["files"][i]).pixels)
        except (MedclfError, OSError):
            pixels.append(None)
            missing.append(data["rel"][i])
    if missing:
        st.info(f"{len(missing)} image(s) are no longer at their recorded place and are listed without a picture.")
    cache = st.session_state.setdefault("_eval_explained", {})
    cam_key = (card["run_dir"], card.get("created"), data["dataset"], tuple(int(i) for i in shown))
    if cam_key not in cache and any(p is not None for p in pixels):
        predictor, lock = app_ui.load_predictor(card)
        try:
            with st.spinner("Computing heat maps ..."), lock:
                ok = [k for k, p in enumerate(pixels) if p is not None]
                # the map of the predicted (wrong) class
                explained = iter(predictor.explain([pixels[k] for k in ok], "gradcam",
                                                   [int(y_pred[shown[k]]) for k in ok]))
                cache.clear()
                cache[cam_key] = [next(explained) if p is not None else None for p in pixels]
        except Exception as exc:  # noqa: BLE001
            st.info(f"Heat maps are not available for this model ({type(exc).__name__}).")
            cache[cam_key] = [None] * len(pixels)
    explanations = cache.get(cam_key, [None] * len(pixels))
    heat = [None if e is None else e.heatmap for e in explanations]
    # the deletion test costs ~38 predictions per map (about 3x the maps themselves): on request only
    faith_cache = st.session_state.setdefault("_eval_faithfulness", {})
    faith_help = ("Deletion test: the most highlighted regions are blanked 10% at a time and the model re-run; the "
                  "faster the predicted class's probability falls compared with random regions, the higher. "
                  "1 = falls at once, 0 = no better than random regions, below 0 = worse than random.")
    scored = [k for k, e in enumerate(explanations) if e is not None]
    if scored and cam_key not in faith_cache and st.button("Check these heat maps (faithfulness)",
                                                           key="eval-faithfulness", help=faith_help):
        predictor, lock = app_ui.load_predictor(card)
        try:
            with st.spinner("Deletion test on each map ..."), lock:
                results = predictor.faithfulness([pixels[k] for k in scored], [heat[k] for k in scored],
                                                 [explanations[k].class_index for k in scored])
            faith_cache.clear()
            faith_cache[cam_key] = dict(zip(scored, (r["faithfulness"] for r in results), strict=True))
        except Exception as exc:  # noqa: BLE001
            st.info(f"The faithfulness check failed ({type(exc).__name__}).")
    faith = faith_cache.get(cam_key, {})
    scores = [f for f in faith.values() if f is not None]
    if faith:
        st.caption(f"Mean faithfulness of these {len(faith)} map(s): "
                   + (f"{np.mean(scores):.2f}" if scores else "n/a")
                   + f" ({len(faith) - len(scores)} not testable).", help=faith_help)
    cols = st.columns(4)
    for k, i in enumerate(shown):
        true_c, pred_c = class_names[y_true[i]], class_names[y_pred[i]]
        caption = f"{Path(data['rel'][i]).name}: true {true_c}, predicted {pred_c} ({probs[i][y_pred[i]]:.0%})"
        if faith.get(k) is not None:
            caption += f"; faithfulness {faith[k]:.2f}"
        col = cols[k % 4]
        if pixels[k] is None:
            col.markdown(caption)
        elif heat[k] is not None:
            col.image(explain.overlay(pixels[k], heat[k], 0.4), caption=caption, width="stretch")
        else:
            col.image(pixels[k], caption=caption, width="stretch")
