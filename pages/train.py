"""Train: choose a dataset, see its audit, launch a background training run and watch it."""

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

import app_ui
from medclf_core.training import jobs
from medclf_core.training.config import (ARCH_DEFAULT, auto_augment_preset, field_choices, form_range,
                                         suggested_values)
from medclf_core.reports import plots
from medclf_core.server.access import resolve_data_path
from medclf_core.models.architectures import get_architecture, image_size_choices, list_architectures
from medclf_core.data.augment import AugmentConfig
from medclf_core.data.audit import audit_source
from medclf_core.errors import MedclfError
from medclf_core.formatting import figures_source, too_few_images
from medclf_core.reports.curves import run_curves
from medclf_core.training.events import split_caption
from medclf_core.training.plan import dataset_plan
from medclf_core.data.uploads import remove_stale_uploads, upload_extract_folder
from medclf_core.io.atomic import read_json

SAMPLE_DATASET = app_ui.SAMPLES / "datasets" / "chest_xray"
SOURCES = {"sample": "Bundled sample (80 chest X-rays)", "folder": "A folder on the server", "zip": "Upload a zip"}
POLL_S = 1.0
AUG_SWITCHES = {"rotation": ("Rotation", 0.05), "shift": ("Shift", 0.1), "zoom": ("Zoom", 0.1),
                "shear": ("Shear", 0.1), "horizontal_flip": ("Horizontal flip", True),
                "vertical_flip": ("Vertical flip", True), "brightness": ("Brightness", 0.1),
                "contrast": ("Contrast", 0.1)}

app_ui.start_page()  # here too: a page opened first on a fresh server runs without app.py
st.title("Train")
root = jobs.jobs_dir(app_ui.models_dir())


# ---------------------------------------------------------------------------- the job monitor

def _cm_for(run_dir: str | None):
    ev = read_json(run_dir, "evaluation.json") if run_dir else None
    m = (ev or {}).get("test") or {}  # the reported split's figures (out-of-fold ones for a cross-validated run)
    return m.get("confusion_matrix"), m.get("class_names"), figures_source((ev or {}).get("split"), m.get("n"))


def _open_model(name: str) -> None:
    st.session_state["model_name"] = name
    st.session_state["models_selected"] = name


def _curves(p: dict, job_id: str) -> None:
    """The job's epoch curves; a cross-validated head has none, and gets its cross-validation and a sentence."""
    card = read_json(p["run_dir"], "card.json") if p["state"] == "done" and p["run_dir"] else None
    figure, why = run_curves(p["history"], card)
    if why:
        st.caption(app_ui.md_escape(why))
    if figure is not None:
        st.plotly_chart(figure, key=f"curves-{job_id}", config={"displayModeBar": False})


def monitor(job_id: str, polling: bool) -> None:
    try:
        p = jobs.job_progress(job_id, root)
    except MedclfError as exc:
        st.warning(app_ui.md_escape(exc))
        return
    title = p["name"] or f"job {job_id}"
    state = p["state"]
    if polling and state in jobs.FINAL_STATES:
        st.rerun()  # the whole page: show the outcome and stop polling
    st.subheader(f"Training job: {app_ui.md_escape(title)}")
    speed = f" · {p['speed']}" if p.get("speed") else ""  # images/s, or the head's speed on cached features
    st.caption(f"Job {job_id}, started {p.get('created') or '?'} · data: {app_ui.md_escape(p['config'].get('data'))}"
               + (f" · on {p['devices']}" if p.get("devices") else "") + speed)
    if state in ("queued", "running"):
        st.progress(p["fraction"], text=app_ui.md_escape(p["text"]))  # the one fold of the events (medclf_core.training.events)
        if p["cancel_requested"]:
            st.info("Cancelling: training stops after the current batch.")
        elif st.button("Cancel training", key=f"cancel-{job_id}", type="secondary"):
            jobs.cancel_job(job_id, root)
            st.info("Cancelling: training stops after the current batch.")
    elif state == "done":
        st.success(app_ui.md_escape(p["message"] or "Training finished."))
    elif state == "cancelled":
        st.info(app_ui.md_escape(p["message"] or "Training was cancelled; no model was saved."))
    else:
        st.error(f"Training failed: {app_ui.md_escape(p['message'] or 'unknown reason')}")
    _curves(p, job_id)
    if state == "done":
        metrics = p["metrics"] or {}
        left, right = st.columns(2)
        with left:
            on = figures_source(metrics.get("split"), metrics.get("n"))  # out-of-fold, or a split
            st.markdown(f"**Final metrics** ({app_ui.md_escape(on)})")
            if too_few := too_few_images(metrics.get("n")):  # the Models page's rule (formatting.MIN_RELIABLE_N)
                st.warning(too_few)
            st.dataframe(pd.DataFrame(plots.metrics_table(metrics)), hide_index=True, width="stretch")
        cm, names, on = _cm_for(p["run_dir"])
        if cm and names:
            right.plotly_chart(plots.confusion_matrix_figure(cm, names, title=f"Confusion matrix ({on})"),
                               key=f"cm-{job_id}", config={"displayModeBar": False})
        name = p["name"]
        try:
            st.page_link("pages/models.py", label=f"Open the model card of '{app_ui.md_escape(name)}'", icon=":material/inventory_2:")
        except Exception:  # noqa: BLE001 - the page runs outside the navigation (tests)
            st.markdown(f"The model is registered as **{app_ui.md_escape(name)}** (see the Models page).")
        st.button(f"Use '{app_ui.md_escape(name)}' for prediction", key=f"use-{job_id}", on_click=_open_model, args=(name,))
    if p["notices"] or p["audit"]:
        with st.expander("Details"):
            for n in p["notices"]:
                st.text(n)
            if p["devices"]:
                st.write(app_ui.md_escape(f"Devices: {p['devices']}"))
            if p["split"]:
                st.write(app_ui.md_escape(split_caption(p)))
                st.dataframe(pd.DataFrame(p["split"]), width="stretch")


shown = jobs.running_job(root) or st.session_state.get("train_job") or jobs.latest_job(root)
if shown:
    try:
        is_running = jobs.job_progress(shown, root)["state"] in ("queued", "running")
    except MedclfError:
        is_running = False
    st.fragment(monitor, run_every=POLL_S if is_running else None)(shown, is_running)
    st.divider()


# ---------------------------------------------------------------------------- dataset

st.subheader("1. Dataset")
kind = st.radio("Dataset source", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="train_source")
source: str | None = None
extract_to: str | None = None
if kind == "sample":
    source = str(SAMPLE_DATASET)
    st.caption(f"`{SAMPLE_DATASET.relative_to(app_ui.REPO)}`: 40 NORMAL and 40 PNEUMONIA chest X-rays "
               "(CC BY 4.0, Kermany et al. 2018).")
elif kind == "folder":
    typed = st.text_input("Folder on the server", key="train_folder",
                          placeholder="/data/chest_xray  (root/<class>/<images> or root/train|val|test/<class>/...)")
    source = typed.strip() or None
    if source:  # only inside the configured data roots (medclf_core.server.access)
        try:
            source = str(resolve_data_path(source))
        except MedclfError as exc:
            st.error(f"This dataset cannot be used: {app_ui.md_escape(exc)}")
            source = None
else:
    up = st.file_uploader("Dataset zip", type=["zip"], key="train_zip",
                          help="root/<class>/<images> or root/train|val|test/<class>/<images> inside a zip.")
    if up is not None:
        data = up.getvalue()
        digest = hashlib.sha1(data).hexdigest()[:16]
        folder = root / "uploads" / digest
        zpath = folder / Path(up.name).name
        running = jobs.running_job(root)
        in_use = [jobs.job_spec(running, root)["config"].get("data", "")] if running else []
        remove_stale_uploads(root / "uploads", in_use=[p for p in in_use if p])
        if not zpath.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            zpath.write_bytes(data)
        else:
            folder.touch()  # in use again: kept another day (data.uploads.remove_stale_uploads)
        source, extract_to = str(zpath), str(upload_extract_folder(folder, up.name))  # named as the zip


@st.cache_data(ttl=120, max_entries=8, show_spinner="Checking the dataset (every image is decoded once) ...")
def audit(path: str, extract: str | None) -> dict:
    return audit_source(path, extract_to=extract)


report = None
if source:
    try:
        report = audit(source, extract_to)
    except MedclfError as exc:
        st.error(f"This dataset cannot be used: {app_ui.md_escape(exc)}")
    except Exception as exc:  # noqa: BLE001
        st.error(f"This dataset cannot be read ({type(exc).__name__}).")
else:
    st.info("Choose a dataset to see its audit.")

if report:
    counts = pd.DataFrame(report["counts"]).fillna(0).astype(int)
    counts.index.name = "class"
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Images", report["n_images"])
    c2.metric("Classes", len(report["class_names"]))
    c3.metric("Imbalance", f"{report['imbalance_ratio']:.2f} : 1" if report["imbalance_ratio"] else "a class is empty")
    c4.metric("Unreadable", len(report["unreadable"]))
    c5.metric("Duplicate groups", len(report["duplicate_groups"]) + len(report["near_duplicate_groups"]))
    st.markdown("**Images per class and split**" + ("" if report["presplit"] else " (not pre-split)"))
    st.info(app_ui.md_escape(dataset_plan(report, list_architectures())))  # the trainer's own rule (training.plan)
    st.dataframe(counts, width="stretch")
    for w in report["warnings"]:
        st.warning(app_ui.md_escape(w))
    if not report["warnings"]:
        st.success("No problems found: every image is readable, no duplicates, classes balanced.")
    if report["unreadable"]:
        with st.expander(f"Unreadable files ({len(report['unreadable'])})"):
            st.dataframe(pd.DataFrame(report["unreadable"]), hide_index=True, width="stretch")
    groups = report["duplicate_groups"] + report["near_duplicate_groups"]
    if groups:
        with st.expander(f"Duplicate and near-duplicate groups ({len(groups)})"):
            for g in groups:
                st.text(", ".join(g))
    if st.button("Check again", key="train-recheck"):
        audit.clear()
        st.rerun()


# ---------------------------------------------------------------------------- the form

st.subheader("2. Settings")
is_sample = kind == "sample"
archs = list_architectures()
# A pretrained backbone with the transfer recipe is the default for every dataset: a head on cached
# ImageNet features trains the bundled sample in well under a minute on a CPU and holds up on other images.
DEFAULT_ARCH = "efficientnet_lite0" if "efficientnet_lite0" in archs else archs[0]
default_spec = get_architecture(DEFAULT_ARCH)
# the form's choices and ranges: TrainConfig's field metadata; sizes also every architecture's native one, and
# first the architecture's own (None: TrainConfig resolves it for the architecture chosen, a form cannot follow it)
IMAGE_SIZES = [ARCH_DEFAULT, *image_size_choices(suggested_values("image_size"))]
CHANNELS = field_choices("channels")
WEIGHT_MODES = list(field_choices("class_weights"))


def _last_settings() -> dict:
    """The settings last submitted in this session, else those of the last job (a reload starts a new
    session, and the job's config is on disk): the form starts from them instead of the defaults."""
    saved = st.session_state.get("train_settings")
    if saved is None:
        last = jobs.latest_job(root)
        try:
            saved = jobs.job_progress(last, root)["config"] if last else {}
        except MedclfError:
            saved = {}
    return saved if isinstance(saved, dict) else {}


last = _last_settings()
same_data = bool(report) and last.get("data") == report["root"]  # dataset-specific choices only for that dataset
last_arch = last.get("arch") if last.get("arch") in archs else DEFAULT_ARCH
last_size = last.get("image_size") if last.get("image_size") in IMAGE_SIZES[1:] else ARCH_DEFAULT
channels = last.get("channels") if same_data and last.get("channels") in CHANNELS else (report or {}).get("channels", 1)


def _number(key: str, default):
    """The last value of a setting when it is inside the form's range, else ``default``."""
    lo, hi = form_range(key)
    v = last.get(key)
    return type(default)(v) if isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi else default


def _number_input(where, label: str, setting: str, default, **options):
    """A number input over the setting's range (``TrainConfig`` metadata), starting from its last value."""
    lo, hi = form_range(setting)
    return where.number_input(label, type(default)(lo), type(default)(hi), _number(setting, default), **options)


with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture", archs, index=archs.index(last_arch),
                        format_func=lambda a: f"{a}: {get_architecture(a).description}")
    epochs = _number_input(c2, "Epochs", "epochs", int(default_spec.defaults["epochs"]),
                           help="Pretrained architectures: epochs of the classifier head on cached backbone "
                                "features (a fraction of a second each; early stopping ends sooner). "
                                "Others: epochs over the images. Not used when the head is fitted by "
                                "cross-validation (few images: see the dataset's plan above).")
    batch_size = _number_input(c3, "Batch size", "batch_size", 16 if is_sample else 32)
    c1, c2, c3 = st.columns(3)
    lr = _number_input(c1, "Learning rate", "learning_rate", 1e-3, format="%.5f", step=1e-4)
    image_size = c2.select_slider("Image size (px)", IMAGE_SIZES, value=last_size,
                                  format_func=lambda v: "native" if v == ARCH_DEFAULT else str(v),
                                  help="native: the architecture's own input size (" + ", ".join(
                                      f"{a} {get_architecture(a).defaults['image_size']}" for a in archs) + " px).")
    colour = c3.radio("Input", ["grayscale", "colour (RGB)"], index=0 if channels == 1 else 1, horizontal=True,
                      help="Grayscale suits X-ray, CT and MRI; pretrained models repeat the channel inside the "
                           "model. Choose colour for colour images. The default follows the dataset's images.")
    fine_tune_epochs = _number_input(
        st, "Fine-tuning epochs (pretrained architectures)", "fine_tune_epochs", 0, key="train_finetune",
        help="After the head: at most this many epochs with the top blocks unfrozen at a lower learning rate "
             "(BatchNorm statistics kept), the best kept. EfficientNet-Lite0 trains them on activations cached "
             "with the features (minutes on a CPU); other architectures over the images (slow on a CPU: minutes "
             "per epoch on thousands of images).")
    st.markdown("**Augmentation** (training images only)")
    if is_sample or not report:
        preset_name = "chest_xray" if is_sample else "default"
    else:  # the rule training's "auto" follows (CHEST_HINTS)
        preset_name = auto_augment_preset(report["name"], report["class_names"])
    preset = AugmentConfig.preset(preset_name).to_dict()
    cols = st.columns(4)
    switches = {}
    last_augment = last.get("augment") if same_data and isinstance(last.get("augment"), dict) else preset
    for i, (key, (label, _)) in enumerate(AUG_SWITCHES.items()):
        switches[key] = cols[i % 4].checkbox(label, value=bool(last_augment.get(key)), key=f"aug-{key}")
    if preset_name == "chest_xray":  # only for chest data: CT/MRI data flips by default
        st.caption("Horizontal flips are off by default for chest X-rays: they move the heart to the wrong side.")
    tta_flip = st.checkbox("Test-time flip averaging", value=same_data and "hflip" in (last.get("tta") or []),
                           key="train_tta",
                           help="Average each prediction with that of the mirrored image (validation, threshold and "
                                "every later prediction). Needs horizontal flips in training.")
    ensemble = _number_input(st, "Models to average (seed ensemble)", "ensemble", 1, key="train_ensemble",
                             help="Train this many models from different seeds on the same split and ship them "
                                  "as one model that averages them: steadier on small datasets, N times the "
                                  "training time, and N times the prediction cost.")
    c1, c2, c3 = st.columns(3)
    class_weights = c1.radio("Class weights", WEIGHT_MODES, horizontal=True,
                             index=WEIGHT_MODES.index(last["class_weights"]) if last.get("class_weights") in
                             WEIGHT_MODES else 0,
                             help="auto: used when the largest class is 1.5x the smallest or more.")
    patience = _number_input(c2, "Early-stopping patience (epochs)", "patience", 8)
    run_name = c3.text_input("Run name (optional)", placeholder="e.g. chest-64px-try1")
    submitted = st.form_submit_button("Launch training", type="primary")

if submitted:
    if not source or report is None:
        st.error("Choose a dataset that passes the audit first.")
    else:
        augment = {k: ((preset.get(k) or AUG_SWITCHES[k][1]) if on else (False if isinstance(AUG_SWITCHES[k][1], bool) else 0.0))
                   for k, on in switches.items()}
        augment.update({k: v for k, v in preset.items() if k not in AUG_SWITCHES})  # no switch: the preset's (erasing)
        cfg = {"data": report["root"], "arch": arch, "epochs": int(epochs), "batch_size": int(batch_size),
               "learning_rate": float(lr), "image_size": None if image_size == ARCH_DEFAULT else int(image_size),
               "channels": 1 if colour == "grayscale" else 3, "augment": augment, "class_weights": class_weights,
               "patience": int(patience), "name": run_name.strip() or None, "tta": ["hflip"] if tta_flip else [],
               "ensemble": int(ensemble), "task": report["name"], "fine_tune_epochs": int(fine_tune_epochs)}
        st.session_state["train_settings"] = cfg  # the form starts from these next time (a failed launch too)
        try:
            job_id = jobs.start_job(cfg, models_dir=app_ui.models_dir(), root=root)
        except jobs.JobBusy as exc:
            st.error(app_ui.md_escape(exc))
        except MedclfError as exc:
            st.error(f"Training cannot start: {app_ui.md_escape(exc)}")
        else:
            st.session_state["train_job"] = job_id
            st.rerun()
