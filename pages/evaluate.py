"""Evaluate: metrics with intervals, confusion matrices, ROC, a live threshold, and the mistakes.

The model is the sidebar's (app_ui's shared picker). The data is the model's own test split, a folder or zip on the
server, a zip or images uploaded (staged by medclf_core.data.uploads), or a labelled list of studies in a PACS
(staged the same way by medclf_core.pacs.evaluate); all give the same result block below.
"""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import app_ui
import pacs_ui
import site_ui
from medclf_core.data import uploads
from medclf_core.data.split import pattern_problem
from medclf_core.errors import MedclfError
from medclf_core.explain.faithfulness import format_faithfulness
from medclf_core.formatting import number, percent
from medclf_core.inference.folder import evaluate_folder, evaluate_predictions
from medclf_core.inference.results import DISPLAY_SIDE, OVERLAY_OPACITY, for_display, result_key
from medclf_core.io import deid
from medclf_core.io.atomic import read_json
from medclf_core.io.images import IMAGE_SUFFIXES, load_image
from medclf_core.pacs.evaluate import (DEFAULT_MAX_INSTANCES, MAX_INSTANCES, MAX_STUDIES, STUDY_PATTERN,
                                      read_study_labels, stage_studies)
from medclf_core.registry.card import positive_class_index
from medclf_core.registry.store import stored_test_predictions
from medclf_core.reports import evaluation_text, plots
from medclf_core.reports.predictions_csv import evaluation_csv
from medclf_core.server.access import data_roots, resolve_data_path
from medclf_core.trust.calibration import calibration_in_use, stored_probabilities
from medclf_core.trust.metrics import evaluate_probabilities
from medclf_core.trust.sites import calibration_label

MAX_MISTAKES = 12
SPLITS = {"auto": "auto (test folder if the dataset is pre-split, else all images)", "all": "all images",
          "test": "test", "val": "val", "train": "train"}
SOURCES = {"own": "the model's own test split", "folder": "a dataset folder or zip on the server",
           "upload": "upload a zip or images", "pacs": "labelled studies in a PACS"}
IMAGE_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)

app_ui.start_page()  # here too: a page opened first on a fresh server runs without app.py
st.title("Evaluate")
card = site_ui.card_in_use(app_ui.require_card())  # a site picked in the sidebar: its temperature and threshold
name = card["name"]
st.caption(f"Model: **{app_ui.md_escape(name)}** (the model chosen in the sidebar; change it there).")
kind = st.radio("Dataset", list(SOURCES), horizontal=True, key="eval_source", format_func=SOURCES.get)
for field in ("eval_folder", "eval_split", "eval_group_pattern"):  # kept while another source is shown: Streamlit
    if field in st.session_state:  # drops an unshown widget's value unless the script sets it (its documented way)
        st.session_state[field] = st.session_state[field]


def _evaluate(predictor, lock, folder, split, group_pattern) -> dict:
    """evaluate_folder (its predictions kept for the charts) with a progress bar by image count (reading
    and decoding is most of the time)."""
    bar = st.progress(0.0, text="Finding the images ...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Reading image {done} of {total} ..."
                     if done < total else f"Classifying the {total} images ...")

    try:
        with lock:
            out = evaluate_folder(predictor, folder, split, progress=progress, with_predictions=True,
                                  group_pattern=group_pattern)
    except BaseException:
        bar.empty()
        raise
    bar.progress(1.0, text=evaluation_text.progress_done(evaluation_text.image_counts(out["predictions"])))
    return out


def _upload_key(files) -> str:
    digest = hashlib.sha1()
    for label, f in files:
        digest.update(f"{label}\0{f.name}\0{f.size}\0".encode())
        digest.update(hashlib.sha1(f.getvalue()).digest())
    return digest.hexdigest()[:16]


def _stage(mode: str, zip_file, by_class: dict):
    """The upload written to this session's temporary folder; the previous one is removed first."""
    old = st.session_state.pop("_eval_staged", None)
    if old is not None:
        old.remove()
    staged = (uploads.stage_zip(zip_file.getvalue(), zip_file.name) if mode == "zip" else
              uploads.stage_images({c: [(f.name, f.getvalue()) for f in fs] for c, fs in by_class.items()}))
    st.session_state["_eval_staged"] = staged  # removed when replaced or when this session ends
    return staged


def _stage_pacs(conn, listing, per_study: int):
    """The listed studies' images fetched from the PACS into this session's temporary folder (as :func:`_stage`)."""
    rows = read_study_labels(listing.getvalue(), card.class_names)
    old = st.session_state.pop("_eval_staged", None)
    if old is not None:
        old.remove()
    bar = st.progress(0.0, text=f"Fetching the images of {len(rows)} studies from the PACS ...")
    try:
        staged = stage_studies(conn, rows, max_instances=per_study,
                               progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                         text=f"Fetched study {done} of {total} ..."))
    finally:
        bar.empty()
    st.session_state["_eval_staged"] = staged
    return staged


data = evaluated = None  # the predictions drawn below; the metrics when evaluate_folder made them
evaluation_id = result_key(card, kind)  # one per evaluation shown: the threshold slider's state belongs to it
if kind == "own":
    data = stored_test_predictions(card, read_json(card["run_dir"], "evaluation.json"), search_roots=data_roots())
    if data is None:
        st.info("This model has no stored test-split predictions; evaluate it on a dataset folder instead.")
        st.stop()
    data = {**data, "probs": stored_probabilities(card, data["probs"])}  # calibrated like every prediction
    n, found = len(data["y_true"]), data["n_found"]
    st.caption(f"{n} images of the {app_ui.md_escape(data['split'])} split that training held out.")
    if found < n:  # where the training machine kept them means nothing here: no path, only what is missing
        st.info(("None of these images is" if not found else f"{n - found} of these images are not")
                + " on this server: the images this model was trained and tested on are not here. The "
                "figures below come from the predictions stored with the model; an image that is not here is "
                "listed by name, without a picture.")
else:
    store = st.session_state.setdefault("_eval_data", {})
    go = False
    if kind == "folder":
        c1, c2, c3 = st.columns([3, 2, 1])
        folder = c1.text_input("Dataset folder or zip on the server", key="eval_folder",
                               placeholder="root/<class>/<images> or root/test/<class>/<images>")
        split = c2.selectbox("Split", list(SPLITS), format_func=SPLITS.get, key="eval_split")
        c3.write("")
        go = c3.button("Evaluate", type="primary", key="eval_go")
        key = result_key(card, "folder", folder.strip(), split)
        if go and not folder.strip():
            st.warning("Type the path of a dataset folder or zip first.")
            go = False
        run = (lambda: resolve_data_path(folder)) if go else None  # data roots only
    elif kind == "pacs":
        with st.form("eval-pacs-form", border=False):  # one form: the typed password goes with the button
            conn = pacs_ui.connection("eval-pacs")
            c1, c2 = st.columns([3, 2])
            listing = c1.file_uploader("Labelled studies: a CSV of StudyInstanceUID,label", type=["csv", "txt"],
                                       key="eval_pacs_csv",
                                       help=f"One study per line (a header line is optional; at most {MAX_STUDIES}). "
                                            f"Labels are the model's classes ({', '.join(card.class_names)}).")
            per_study = c2.number_input("Images per study (at most)", 1, MAX_INSTANCES, DEFAULT_MAX_INSTANCES,
                                        key="eval_pacs_per_study", help="The first image instances of each study's "
                                        "image series, in series order; reports and documents are skipped.")
            go = st.form_submit_button("Evaluate", type="primary", key="eval_go")
        split = "all"
        if go and listing is None:
            st.warning("Choose the CSV of StudyInstanceUID,label first.")
        go = go and listing is not None and conn is not None
        key = result_key(card, "pacs", conn.url if conn else "", int(per_study),
                         hashlib.sha1(listing.getvalue()).hexdigest() if listing is not None else "")
        run = (lambda: _stage_pacs(conn, listing, int(per_study)).root) if go else None
    else:
        mode = st.radio("Upload", ["zip", "images"], horizontal=True, key="eval_upload_mode",
                        format_func={"zip": "a zip of class folders", "images": "images, by class"}.get)
        by_class: dict = {}
        zip_file = None
        if mode == "zip":
            c1, c2 = st.columns([3, 2])
            zip_file = c1.file_uploader("Dataset zip", type=["zip"], key="eval_zip",
                                        help="<class>/<images>, or train|val|test/<class>/<images>, inside a zip. "
                                             f"Class folders are matched to the model's classes "
                                             f"({', '.join(card.class_names)}) by name.")
            split = c2.selectbox("Split", list(SPLITS), format_func=SPLITS.get, key="eval_upload_split")
            files = [("zip", zip_file)] if zip_file is not None else []
        else:
            split = "all"
            cols = st.columns(min(len(card.class_names), 3))
            for i, c in enumerate(card.class_names):
                by_class[c] = cols[i % len(cols)].file_uploader(
                    f"Images of class {c}", type=IMAGE_TYPES, accept_multiple_files=True, key=f"eval_images_{i}") or []
            files = [(c, f) for c, fs in by_class.items() for f in fs]
        go = st.button("Evaluate", type="primary", key="eval_go", disabled=not files)
        key = result_key(card, "upload", mode, _upload_key(files) if files else "", split)
        run = (lambda: _stage(mode, zip_file, by_class).root) if go else None
    pattern = STUDY_PATTERN if kind == "pacs" else st.text_input(
        "One patient's images (optional)", key="eval_group_pattern", placeholder=r"e.g. person\d+",
        help="A regular expression on file names that finds the patient or case id (its first group, else the "
             "match). The 95% intervals then resample patients, since one patient's images are not independent.")
    if go and pattern and (why := pattern_problem(pattern)):
        st.warning(f"The patient pattern {app_ui.md_escape(why)}.")
        go = False
    key = (key, pattern)
    if go:
        store.clear()
        st.session_state["_eval_seq"] = st.session_state.get("_eval_seq", 0) + 1  # new, even on the same data
        if kind == "folder" and (old := st.session_state.pop("_eval_staged", None)) is not None:
            old.remove()  # an earlier upload is not shown any more
        try:
            source = run()
            predictor, lock = app_ui.load_predictor(card, site=True)
            store[key] = _evaluate(predictor, lock, source, split, pattern or None)
        except MedclfError as exc:
            st.error(f"This dataset cannot be evaluated: {app_ui.md_escape(exc)}")
        except Exception as exc:  # noqa: BLE001
            st.error(f"This dataset cannot be evaluated ({type(exc).__name__}).")
    evaluated = store.get(key)
    evaluation_id = (key, st.session_state.get("_eval_seq", 0))
    if evaluated is None:
        st.info({"folder": "Choose a folder and press **Evaluate**.",
                 "pacs": "Give the PACS address and a CSV of StudyInstanceUID,label, then press **Evaluate**."}.get(
                     kind, "Upload a zip or images and press **Evaluate**."))
        st.stop()
    data = evaluated["predictions"]
    staged = st.session_state.get("_eval_staged")
    if kind == "upload" and staged is not None and staged.skipped:
        with st.expander(f"{len(staged.skipped)} member(s) of the zip were not extracted"):
            st.dataframe(pd.DataFrame(staged.skipped), hide_index=True, width="stretch")
    if kind == "pacs" and staged is not None and staged.skipped:
        with st.expander(f"{len(staged.skipped)} note(s) on the studies (lineNNN: the study's line in the CSV)"):
            st.dataframe(pd.DataFrame(staged.skipped), hide_index=True, width="stretch")
    if data["skipped"]:
        with st.expander(f"{len(data['skipped'])} file(s) could not be read and were skipped"):
            st.dataframe(pd.DataFrame([{**s, "file": deid.safe_file_label(s["file"])} for s in data["skipped"]]),
                         hide_index=True, width="stretch")

class_names = data["class_names"]
y_true, probs = data["y_true"], data["probs"]
threshold = card.get("threshold")
positive = positive_class_index(class_names, card.get("positive_class"))
binary = len(class_names) == 2 and positive is not None


@st.cache_data(show_spinner="Computing metrics and bootstrap intervals ...", max_entries=16)
def stored_metrics(y, p, names, thr, pos):
    """evaluate_predictions of the stored test split, kept between runs (the bootstrap takes seconds)."""
    return evaluate_predictions({"y_true": np.asarray(y), "probs": np.asarray(p), "class_names": list(names)},
                                threshold=thr, positive=pos, bootstrap=1000)


m = evaluated if evaluated is not None else stored_metrics(
    tuple(y_true.tolist()), tuple(map(tuple, probs.tolist())), tuple(class_names), threshold, positive)

st.subheader(f"{app_ui.md_escape(name)} on {len(y_true)} images")
if evaluated is not None:  # every count true: files found, read, not read, refused, answered
    st.caption(evaluation_text.counts_sentence(evaluation_text.image_counts(data)))
for warning in ("site_message", "message"):  # the site's fitting images; the model's own training images
    if ((evaluated or {}).get("overlap") or {}).get(warning):
        st.warning(app_ui.md_escape(evaluated["overlap"][warning]))
metric_rows = plots.metrics_table(m)  # the table here and the out-of-distribution panel's "all images" column
left, right = st.columns(2)
with left:
    app_ui.metrics_heading(m, "studies" if kind == "pacs" else "patients or cases")
    st.dataframe(pd.DataFrame(metric_rows), hide_index=True, width="stretch")
with right:
    st.markdown("**Per class**")
    st.dataframe(pd.DataFrame(m["per_class"]).T.round(3), width="stretch")
st.download_button("Download each image's result (CSV, without patient identifiers)", mime="text/csv",
                   file_name="medclf_evaluation.csv", key="eval-csv",  # made on click; decided as the metrics are
                   data=lambda: evaluation_csv(data, threshold=threshold if binary else None, positive=positive,
                                               calibration=calibration_label(card.get("site_calibration"))))


st.subheader("Out-of-distribution check")
app_ui.ood_panel(m["ood"], metric_rows)

st.subheader("Calibration")
ece = m.get("ece")
st.caption(f"Expected calibration error {number(ece)} (top class, 15 bins): how far the model's confidence "
           f"is from its accuracy. Calibration in use: {app_ui.md_escape(calibration_in_use(card))}.")
st.plotly_chart(plots.reliability_figure(y_true, probs), key="reliability", config={"displayModeBar": False})
if kind != "own":  # labelled images of a site: fit and check its own calibration (medclf recalibrate's core)
    site_ui.adopt_site_panel(card, data, lambda c: app_ui.load_predictor(c, site=True)[0],
                             source=Path(data["dataset"]).name if kind == "folder" else kind)

st.subheader("Deferring to a reader")  # selective prediction: accuracy against coverage
app_ui.deferral_panel(m.get("selective") or {}, evaluation_id)

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
    # One source of truth: the slider's value is the only threshold below (metrics, matrix, ROC marker), and
    # its state is keyed by the evaluation shown, so a new evaluation (another model, dataset or press of
    # Evaluate) starts at the operating threshold instead of a value left in the browser by an earlier one.
    slider_key = "eval-thr-" + hashlib.sha1(repr(evaluation_id).encode()).hexdigest()[:16]
    shown = float(st.slider(f"Threshold on P({pos_name})", 0.0, 1.0, round(start, 3), 0.001, format="%.3f",
                            key=slider_key,
                            help=f"The operating threshold in use is {percent(start)} ({start:.3f} on this scale), "
                            "chosen on "
                            + (f"the images of site '{site['site']}'." if (site := card.get("site_calibration"))
                               else "the model's validation split.")))
    t = start if shown == round(start, 3) else shown  # at its start, the exact threshold (the metrics above use it)
    tm = evaluate_probabilities(y_true, probs, class_names, threshold=t, positive=positive, bootstrap=0)
    c1, c2, c3 = st.columns(3)
    c1.metric("Sensitivity", percent(tm["sensitivity"]))
    c2.metric("Specificity", percent(tm["specificity"]))
    c3.metric("Accuracy", percent(tm["accuracy"]))
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
    if st.session_state.get("_eval_shown") != evaluation_id:  # another evaluation than the last run drew:
        st.session_state["_eval_shown"] = evaluation_id       # its slider starts afresh, at the operating point
        st.session_state["_eval_shown_n"] = st.session_state.get("_eval_shown_n", 0) + 1
    evaluation_id = (evaluation_id, st.session_state["_eval_shown_n"])
    threshold_panel()
elif m.get("roc"):
    st.plotly_chart(plots.roc_figure(m["roc"], auc=m.get("auc")), key="roc-multi", config={"displayModeBar": False})

# ---- the mistakes, with where the model looked
st.subheader("Misclassified images")
mis = evaluation_text.mistakes(data, threshold=threshold if binary else None, positive=positive,
                               site=(card.get("site_calibration") or {}).get("site"))
y_pred, wrong = mis["y_pred"], mis["wrong"]  # answered images only: a refused image has no finding
if not len(wrong):
    st.success(evaluation_text.mistakes_caption(mis, MAX_MISTAKES))
else:
    st.caption(evaluation_text.mistakes_caption(mis, MAX_MISTAKES))
    shown = wrong[:MAX_MISTAKES]
    pixels, missing = [], []
    for i in shown:
        try:
            pixels.append(load_image(data["files"][i]).pixels)
        except (MedclfError, OSError):
            pixels.append(None)
            missing.append(data["rel"][i])
    if missing and kind != "own":  # the own split says above which of its images are not on this server
        st.info(f"{len(missing)} image(s) cannot be read any more and are listed without a picture.")
    cache = st.session_state.setdefault("_eval_explained", {})
    cam_key = result_key(card, data["dataset"], tuple(int(i) for i in shown))
    if cam_key not in cache and any(p is not None for p in pixels):
        predictor, lock = app_ui.load_predictor(card, site=True)
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
    # the deletion test costs ~38 predictions per map (about 3x the maps themselves): on request only
    faith_cache = st.session_state.setdefault("_eval_faithfulness", {})
    faith_help = ("Deletion test: the most highlighted regions are blanked 10% at a time and the model re-run; the "
                  "faster the predicted class's log-odds fall compared with random regions, the higher. "
                  "1 = falls at once, 0 = no better than random regions, below 0 = worse than random.")
    scored = [k for k, e in enumerate(explanations) if e is not None]
    if scored and cam_key not in faith_cache and st.button("Check these heat maps (faithfulness)",
                                                           key="eval-faithfulness", help=faith_help):
        predictor, lock = app_ui.load_predictor(card, site=True)
        try:
            with st.spinner("Deletion test on each map ..."), lock:
                checked = predictor.check_faithfulness([explanations[k] for k in scored])
            faith_cache.clear()
            faith_cache[cam_key] = dict(zip(scored, (h.faithfulness for h in checked), strict=True))
        except Exception as exc:  # noqa: BLE001
            st.info(f"The faithfulness check failed ({type(exc).__name__}).")
    faith = faith_cache.get(cam_key, {})
    scores = [f for f in faith.values() if f is not None]
    if faith:
        st.caption(f"Mean faithfulness of these {len(faith)} map(s): "
                   + format_faithfulness(float(np.mean(scores)) if scores else None)
                   + f" ({len(faith) - len(scores)} not testable).", help=faith_help)
    cols = st.columns(4)
    for k, i in enumerate(shown):
        caption = evaluation_text.mistake_caption(data, mis, i, threshold=threshold, positive=positive)
        if faith.get(k) is not None:
            caption += f"; faithfulness {format_faithfulness(faith[k])}"
        caption = app_ui.md_escape(caption)  # file and class names; image captions are Markdown too
        col = cols[k % 4]
        if pixels[k] is None:
            col.markdown(caption)
        elif explanations[k] is not None:
            col.image(explanations[k].overlay(OVERLAY_OPACITY, DISPLAY_SIDE // 2), caption=caption, width="stretch")
        else:
            col.image(for_display(pixels[k], DISPLAY_SIDE // 2), caption=caption, width="stretch")
app_ui.refused_and_cautioned(data, mis)
