"""Predict: upload images (or click a sample, or open a study from a PACS), see the class, the decision, and a
heat map; images from a PACS can have their results written back to it as DICOM objects."""

from pathlib import Path

import pandas as pd
import streamlit as st

import app_ui
import pacs_ui
import site_ui
from medclf_core.errors import MedclfError
from medclf_core.inference.reading import FAITHFULNESS_HELP, HEATMAP_GUIDE, reading_guide
from medclf_core.inference.results import (DISPLAY_SIDE, OVERLAY_OPACITY, HeatMap, class_word, feature_score_caption,
                                           for_display, gallery_caption, image_digest, result_key, results_table)
from medclf_core.io import deid
from medclf_core.io.images import IMAGE_SUFFIXES, load_image
from medclf_core.pacs.client import PacsError
from medclf_core.pacs.writeback import WriteSeries, write_results
from medclf_core.registry.card import threshold_rule_text
from medclf_core.registry.card_reading import finding_mimics
from medclf_core.registry.performance import performance_rows
from medclf_core.reports import plots
from medclf_core.reports.pdf import report_bytes, report_file_name
from medclf_core.reports.predictions_csv import predictions_csv
from medclf_core.reports.tables import fitted_widths

# every extension the core decodes, as Streamlit's own hint names them (.jpeg/.tiff also accepted, as pairs)
_STREAMLIT_PAIRED = {"jpeg": "jpg", "tiff": "tif"}
UPLOAD_TYPES = sorted({_STREAMLIT_PAIRED.get(s.lstrip("."), s.lstrip(".")) for s in IMAGE_SUFFIXES})
UPLOAD_LABEL = "Upload one or more images (" + ", ".join(t.upper() for t in UPLOAD_TYPES) + ")"
SAMPLE_FILES = sorted((app_ui.SAMPLES / "images" / "chest_xray").glob("*.jpeg")) + sorted(
    (app_ui.SAMPLES / "dicom").glob("*.dcm"))
CAM_METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
MAX_CACHE = 64


def sample_label(path: Path) -> str:
    """A short button label (the full file name is the button's help): 'Normal 1', 'Pneumonia 2', 'DICOM CT 1'."""
    if path.suffix.lower() == ".dcm":
        kind = "DICOM " + path.stem.split("_")[0]
    else:
        kind = path.stem.split("_")[0].capitalize()
    same = [p for p in SAMPLE_FILES if (p.suffix.lower() == ".dcm") == (path.suffix.lower() == ".dcm")
            and p.stem.split("_")[0].lower() == path.stem.split("_")[0].lower()]
    return f"{kind} {same.index(path) + 1}"


app_ui.start_page()  # here too: a page opened first on a fresh server runs without app.py
st.title("Predict")
card = app_ui.require_card()
about = st.container()  # filled once the model is loaded; the file input comes first so it is usable at once

uploads = st.file_uploader(UPLOAD_LABEL, type=UPLOAD_TYPES, accept_multiple_files=True, key="predict_upload")

with st.expander("... or try a bundled sample image", expanded=not uploads):
    cols = st.columns(5)
    for i, path in enumerate(SAMPLE_FILES):
        if cols[i % 5].button(sample_label(path), key=f"sample-{path.name}", help=path.name, width="stretch"):
            st.session_state["predict_samples"] = [str(path)]
    c1, c2 = st.columns(2)
    if c1.button("All sample images", key="sample-all"):
        st.session_state["predict_samples"] = [str(p) for p in SAMPLE_FILES]
    if st.session_state.get("predict_samples") and c2.button("Clear samples", key="sample-clear"):
        st.session_state["predict_samples"] = []

with st.expander("... or open a study from a PACS (DICOMweb)",
                 expanded=bool(st.session_state.get("pacs_fetched") or st.session_state.get("_pacs_studies"))):
    pacs_ui.predict_source()
    if st.session_state.get("pacs_fetched") and st.button("Clear the PACS images", key="pacs-clear"):
        st.session_state["pacs_fetched"] = []

# How to read a result, and the heat-map defaults for new images. Before any upload this also draws, collapsed,
# the kinds of elements a result is made of, so a new browser tab builds their code and styles while it waits
# rather than on the first upload (docs/BENCHMARKS.md, issue 22 item 7, session 14).
with st.expander("How to read a result, and heat-map settings"):
    left, right = st.columns(2)
    left.markdown(reading_guide(card, escape=app_ui.md_escape))  # this model's rule: at its threshold, or the most probable class
    with right:
        st.markdown(HEATMAP_GUIDE)
        st.image(HeatMap.legend(), width="stretch", caption="Heat-map colours: from blue (the class's score was "
                                                         "raised least here) to red (raised most).")
        c1, c2 = st.columns(2)
        c1.selectbox("Method for new images", list(CAM_METHODS), format_func=CAM_METHODS.get,
                     key="heatmap-pref-method")
        c2.slider("Opacity for new images", 0.0, 1.0, OVERLAY_OPACITY, 0.05, key="heatmap-pref-opacity")
        st.caption("The score beside each map (its faithfulness) says how much the model relied on the highlighted "
                   "regions; hover the ? for how it is tested.", help=FAITHFULNESS_HELP)

# the first time after the server starts this loads the model and warms it up, under a progress message
predictor, lock = app_ui.load_predictor(card, site=True)

esc = app_ui.md_escape
with about:
    st.markdown(f"Model **{esc(card['name'])}** ({esc(card.get('task', ''))}): classes "
                f"{esc(card.classes_text)}. Images are resized to {predictor.image_size} px "
                f"({'grayscale' if predictor.channels == 1 else 'colour'}).")
    with st.expander("What this model is for, and how well it did"):
        use = card.get("intended_use") or {}
        st.text(f"Intended use: {use.get('summary') or 'not stated on the model card'}")
        if use.get("not_for"):
            st.text("Not for: " + "; ".join(use["not_for"]))
        if card.get("training_data"):
            st.text(f"Trained on: {card['training_data']}")
        app_ui.table(pd.DataFrame(performance_rows(card)).set_index("data"))
        st.caption("Same source: the model's own held-out split of its training data. Other data: evaluations "
                   "recorded with `evaluate --record`. Expect lower figures on images from other hospitals.")


def _cache(name: str) -> dict:
    d = st.session_state.setdefault(name, {})
    while len(d) > MAX_CACHE:
        d.pop(next(iter(d)))
    return d


def kept(name: str, key: tuple, compute):
    """The result under ``key`` (medclf_core.inference.results.result_key) in this session's cache
    ``name``, computed under the model's lock the first time."""
    cache = _cache(name)
    if key not in cache:
        with lock:
            cache[key] = compute()
    return cache[key]


def decode(name: str, data: bytes) -> dict:
    """One entry per file: {name, sha, pixels, format, notes[, dicom, identifying]} or {name, sha, error}."""
    sha = image_digest(data)
    cache = _cache("_decoded")
    if sha not in cache:
        try:
            img = load_image(data)
            cache[sha] = {"pixels": img.pixels, "format": img.source_format, "notes": list(img.notes),
                          "warnings": list(getattr(img, "warnings", []) or [])}
            if img.dicom is not None:  # display fields and identifiers (to scrub exports), from the same parse
                cache[sha].update({"dicom": img.dicom.metadata, "identifying": img.dicom.identifying})
        except MedclfError as exc:
            cache[sha] = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not take the page down
            cache[sha] = {"error": f"This file could not be read ({type(exc).__name__})."}
    # one file-name rule everywhere (deid.safe_file_label): the header's identifiers and MRN-like tokens go
    return {"name": deid.safe_file_label(name, cache[sha].get("identifying") or ()), "sha": sha, **cache[sha]}


entries = []
for f in uploads or []:
    entries.append(decode(f.name, f.getvalue()))
for p in st.session_state.get("predict_samples") or []:
    try:
        entries.append(decode(Path(p).name, Path(p).read_bytes()))
    except OSError:
        entries.append({"name": deid.safe_file_label(Path(p).name), "sha": p, "error": "The sample file is missing."})
for f in st.session_state.get("pacs_fetched") or []:  # the same decode, gate and heat maps as an upload
    entries.append({**decode(f["name"], f["data"]), "pacs": f})

if not entries:
    st.info("Upload an image or click a sample above to see a prediction (or open a study from a PACS).")
    st.stop()

bad = [e for e in entries if "error" in e]
good = [e for e in entries if "error" not in e]
for e in bad:
    st.warning(f"**{esc(e['name'])}** could not be used: {esc(e['error'])}")
for e in good:
    for w in e.get("warnings") or []:  # e.g. a damaged JPEG: decoded, but its pixels may not be what was scanned
        st.warning(f"**{esc(e['name'])}**: {esc(w)}")
if not good:
    st.stop()

preds = _cache("_predictions")
todo = [e for e in good if result_key(predictor.card, e["sha"]) not in preds]
if todo:
    with st.spinner(f"Classifying {len(todo)} image(s) ..."), lock:
        try:
            # one forward pass: probabilities (calibrated) and the out-of-distribution check; the DICOM facts
            # read above for display are the ones checked against the card's intended use
            described = predictor.predict([e["pixels"] for e in todo], dicom=[e.get("dicom") for e in todo])
        except MedclfError as exc:
            st.error(f"Prediction failed: {esc(exc)}")
            st.stop()
    for e, result in zip(todo, described, strict=True):
        preds[result_key(predictor.card, e["sha"])] = result
for e in good:
    e["result"] = preds[result_key(predictor.card, e["sha"])]


@st.fragment
def cam_panel(entry: dict) -> None:
    """The heat-map view; its controls rerun only this panel. The map is drawn first, its check after."""
    names = predictor.class_names
    sha = entry["sha"]
    c1, c2, c3 = st.columns(3)
    pref_method, pref_opacity = st.session_state["heatmap-pref-method"], st.session_state["heatmap-pref-opacity"]
    method = c1.selectbox("Method", list(CAM_METHODS), index=list(CAM_METHODS).index(pref_method),
                          format_func=CAM_METHODS.get, key=f"cam-method-{sha}")
    target = c2.selectbox("Target class", names, index=names.index(entry["result"].label), key=f"cam-class-{sha}",
                          format_func=lambda name: class_word(entry["result"], name))  # "tumour", not "yes"
    opacity = c3.slider("Opacity", 0.0, 1.0, pref_opacity, 0.05, key=f"cam-opacity-{sha}")
    key = result_key(predictor.card, sha, method, names.index(target))
    try:
        with st.spinner(f"Computing {CAM_METHODS[method]} ..."):
            shown = kept("_heatmaps", key, lambda: predictor.explain([entry["pixels"]], method, names.index(target),
                                                                     compact=True)[0])  # 1 MB, not 16
    except ValueError:
        st.info(f"{CAM_METHODS[method]} is not available in this version; choose another method.")
        return
    except MedclfError as exc:
        st.info(f"No heat map for this model: {esc(exc)}")
        return
    except Exception as exc:  # noqa: BLE001
        st.warning(f"The heat map could not be computed ({type(exc).__name__}).")
        return
    st.image(shown.overlay(opacity, DISPLAY_SIDE), width="stretch",
             caption=f"{CAM_METHODS[method]} for {esc(class_word(entry['result'], target))}: "
                     "red = regions that raised this class's score")
    try:
        with st.spinner("Checking the map (deletion test) ..."):  # ~38 forward passes
            scored = kept("_faithfulness", key, lambda: predictor.check_faithfulness([shown])[0])
    except Exception as exc:  # noqa: BLE001 - the map is shown; a failed check must not hide it
        st.caption(f"Faithfulness: could not be computed ({type(exc).__name__}).")
        return
    st.caption(scored.faithfulness_caption, help=FAITHFULNESS_HELP)
    # A printable report (medclf_core.reports.pdf): the file name scrubbed, no DICOM header values; made on click.
    ids = entry.get("identifying") or []
    st.download_button("Download report (PDF)", mime="application/pdf", key=f"report-{sha}",
                       file_name=report_file_name(entry["name"], ids),
                       data=lambda: report_bytes({"file": entry["name"], **entry["result"]}, entry["pixels"],
                                                 scored, predictor.card, identifying=ids, opacity=opacity))


def show_out_of_distribution(entry: dict) -> None:
    """A flagged image: the warning, the image, and the model's output de-emphasised (not a finding)."""
    result = entry["result"]
    st.subheader(f"{esc(entry['name'])}: {result.refusal_heading}")  # "not for this model" for an age, modality
    st.warning(esc(result.verdict_words))
    left, right = st.columns(2)
    with left:
        image_panel(entry)
    with right:
        with st.expander("What the model output anyway (not a finding)"):
            st.caption("These probabilities come from a model that was not trained on images like this one; "
                       "they say nothing about this image.")
            model_notes(result)
            st.plotly_chart(plots.probability_bars(result["probabilities"], label=result["label"], refused=True,
                                                   class_labels=result.get("class_labels")),
                            key=f"probs-{entry['sha']}", config={"displayModeBar": False})  # grey: not a finding
            score = feature_score_caption(result, predictor.gate)  # each threshold with its own value
            if score:
                st.caption(esc(score))


def model_notes(result: dict) -> None:
    """How the probabilities were made: calibration, seed ensemble, test-time views."""
    site_ui.calibration_caption(predictor)  # the card's calibration, or the site's picked in the sidebar
    rule = predictor.card.get("threshold_rule") or {}
    if "threshold" in result and (words := threshold_rule_text(rule)):
        st.caption(esc(words))  # each part once: the rule often says "validation split, calibrated" itself
    if result.get("ensemble"):
        st.caption(f"This model averages {result['ensemble']} networks trained from different random seeds "
                   "(a seed ensemble); the heat map combines where each of them looked.")
    if result.get("tta"):
        st.caption("The probabilities are the mean over the image and its mirror image (test-time augmentation); "
                   "the heat map explains the image as shown.")


def image_panel(entry: dict) -> None:
    st.image(for_display(entry["pixels"]), width="stretch",
             caption=esc(f"{entry['name']} ({entry['format']}, {entry['pixels'].shape[1]}x{entry['pixels'].shape[0]})"))
    for note in entry.get("notes") or []:
        st.caption(esc(note))
    if entry.get("dicom"):
        facts = entry["dicom"]
        st.caption(esc(" · ".join(f"{k} {v}" for k, v in facts.items()
                              if k in ("Modality", "BodyPartExamined", "PhotometricInterpretation", "Rows",
                                       "Columns", "NumberOfFrames", "TransferSyntax"))))


def show_detail(entry: dict) -> None:
    result = entry["result"]
    if result.get("ood"):
        show_out_of_distribution(entry)
        return
    label, h = result["label"], result.headline  # the decision and P(positive class), borderline when it is
    st.subheader(f"{esc(entry['name'])}: {esc(h.title)}")
    st.markdown(esc(h.sentence))
    if h.finding and (mimics := finding_mimics(predictor.card)):  # measured on the card, read where it matters
        st.info(esc(f"Known limit of this model: {mimics}"))
    app_ui.unfamiliar_caution(result, predictor.card)
    if result.get("ood") is None:
        st.caption("Not checked for out-of-distribution images: this model has no gate (ood.npz). "
                   "`python -m medclf_core refit-trust` adds one.")
    model_notes(result)
    left, right = st.columns(2)
    with left:
        image_panel(entry)
    with right:
        cam_panel(entry)
    st.plotly_chart(plots.probability_bars(result["probabilities"], label=label, threshold=result.get("threshold"),
                                           positive=result.get("positive_class"),
                                           class_labels=result.get("class_labels")),
                    key=f"probs-{entry['sha']}", config={"displayModeBar": False})


WRITE_HELP = ("Into the same study, as new series: a DICOM Structured Report with the result (class, probability, "
              "threshold, verdict, the model and its intended use), a Secondary Capture of the Grad-CAM overlay "
              "marked 'not for diagnosis' (none for an image the model refused), and optionally the PDF report. "
              "All or nothing per image.")


def write_one(entry: dict, series, with_pdf: bool) -> dict:
    """One PACS image's result written back: the Grad-CAM of its decided class (the panel's default map) as
    the overlay, the PDF report when asked."""
    result, names, heat = entry["result"], predictor.class_names, None
    opacity = OVERLAY_OPACITY  # one opacity: overlay, PDF
    if not result.flagged:  # a refused image gets an SR that says so, and no map
        index = names.index(result.label)
        try:
            heat = kept("_heatmaps", result_key(predictor.card, entry["sha"], "gradcam", index),
                        lambda: predictor.explain([entry["pixels"]], "gradcam", index, compact=True)[0])
        except Exception:  # noqa: BLE001 - no map for this model: the SR is still written
            heat = None
    pdf = report_bytes({"file": entry["name"], **result}, entry["pixels"], heat, predictor.card,
                       identifying=entry.get("identifying") or [], opacity=opacity) if with_pdf else None
    return write_results(st.session_state["pacs_conn"], entry["pacs"]["data"], result, predictor.card,
                         overlay=heat.overlay(opacity) if heat else None, pdf=pdf, series=series)


def pacs_writeback() -> None:
    """'Write results to PACS' for the images that came from the PACS, and what was written."""
    from_pacs = [e for e in good if e.get("pacs")]
    if not from_pacs or st.session_state.get("pacs_conn") is None:
        return
    st.divider()
    st.subheader("Write results to PACS")
    with_pdf = st.checkbox("Also the PDF report (as Encapsulated PDF)", key="pacs-write-pdf")
    if st.button(f"Write results to PACS ({len(from_pacs)} image(s))", key="pacs-write", help=WRITE_HELP):
        series, written = WriteSeries(), []
        try:
            with st.spinner("Writing the results to the PACS ..."):
                for e in from_pacs:
                    written.append({"name": e["name"], **write_one(e, series, with_pdf)})
        except PacsError as exc:
            st.error(app_ui.md_escape(f"{exc} " + (f"The results of the first {len(written)} image(s) were "
                                                   "written." if written else "")))
        st.session_state["pacs_written"] = written
    if st.session_state.get("pacs_written"):
        st.success(pacs_ui.written_message(st.session_state["pacs_written"]))
    st.caption(WRITE_HELP)


if len(good) == 1 and not bad:
    show_detail(good[0])
    pacs_writeback()
    st.stop()

# ---- many images: table, CSV, gallery, then details of one
# a refused image is not presented as a finding; a file not read says so, its message in a "note" column, last
table = pd.DataFrame(results_table([{"file": e["name"], "error": e["error"]} if "error" in e
                                    else {**e["result"], "file": e["name"]} for e in entries]))
st.subheader(f"Results for {len(entries)} files")
# every column as wide as its longest text, header included (medclf_core.reports.tables): nothing is cut off,
# the grid scrolls sideways instead; the long texts (reasons, notes) have their own columns, last
widths = fitted_widths(dict(table.items()))
st.dataframe(table, hide_index=True, width="stretch",  # probabilities as text, capped at >99% / <1%
             column_config={c: st.column_config.TextColumn(c, width=w) for c, w in widths.items()})
# The export holds base file names and model outputs only; DICOM identifiers are scrubbed from file names too.
# each row is labelled by its own file's identifiers only (deid.safe_file_label): alone or with others, one name
export_rows = [{"file": e["name"], "identifying": e.get("identifying") or [], "error": e["error"]} if "error" in e
               else {"file": e["name"], "identifying": e.get("identifying") or [], **e["result"],
                     "notes": e.get("notes")} for e in entries]
identifying = [v for e in entries for v in e.get("identifying") or []]
st.session_state["predict_csv"] = predictions_csv(export_rows, identifying=identifying)
st.download_button("Download results (CSV, without patient identifiers)", st.session_state["predict_csv"].encode(),
                   file_name="medclf_predictions.csv", mime="text/csv", key="predict-csv")

st.subheader("Gallery")
cols = st.columns(4)
for i, e in enumerate(good):
    cols[i % 4].image(for_display(e["pixels"], DISPLAY_SIDE // 2), width="stretch",
                      caption=esc(gallery_caption(e["name"], e["result"])))  # "· unfamiliar" when it is

st.divider()
names = [e["name"] for e in good]
choice = st.selectbox("Show the details and heat map of", range(len(good)), format_func=lambda i: names[i],
                      key="predict-detail")
show_detail(good[choice if choice is not None and choice < len(good) else 0])
pacs_writeback()
