"""The models shipped in ``models/``: complete cards, small files, and a working Predict path.

These check the artifacts a newcomer gets, not the models' accuracy (that is measured on held-out
data in ``docs/BENCHMARKS.md``): each loads, predicts every input kind, explains with Grad-CAM,
and gives the obvious answer on the committed sample images.

The bundled models are the ones the registry's manifest names (``BUNDLED_MODEL_NAMES``), never
"every folder in ``models/``": a model the user trained in the app (as the README invites) lives
there too and must not change what these tests check (issue 26).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import REPO

from medclf_core.explain.cams import heatmaps
from medclf_core.io.images import load_image
from medclf_core.inference.predictor import Predictor
from medclf_core.inference.results import Prediction
from medclf_core.registry.card import BUNDLED_MODEL_NAMES, CARD_KEYS
from medclf_core.registry.store import list_runs

MODELS = REPO / "models"
BUNDLED = sorted(BUNDLED_MODEL_NAMES)  # the manifest, whatever else the models folder holds


def bundled_in(models_dir) -> list[str]:
    """The listed runs of a models folder that are bundled models (by the manifest), sorted."""
    return sorted(r["name"] for r in list_runs(models_dir) if r.is_bundled)


def check_bundled_listing(models_dir) -> None:
    """Every manifest model is a complete, listed run of ``models_dir``, and no other run counts as bundled."""
    assert all((models_dir / n / "card.json").is_file() and (models_dir / n / "model.keras").is_file()
               for n in BUNDLED)
    assert bundled_in(models_dir) == BUNDLED


def test_one_model_per_demo_task_and_chest_is_the_app_default():
    assert BUNDLED == ["brain-mri-tumour", "chest-xray-pneumonia", "imaging-modality"]
    check_bundled_listing(MODELS)
    import app_ui

    assert app_ui.PREFERRED_DEFAULT == "chest-xray-pneumonia"


def test_a_model_the_user_trained_does_not_change_what_counts_as_bundled(tmp_path):
    """A copy of models/ with a run trained in the app beside the bundled ones (named as the app names a
    retrained chest model): the same bundled models, the user's run listed and not bundled."""
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy, ignore=shutil.ignore_patterns(".*"))
    user = copy / "chest-xray-pneumonia-2"
    shutil.copytree(MODELS / "chest-xray-pneumonia", user)
    card = json.loads((user / "card.json").read_text())
    card.update(name=user.name, bundled=False, created="2030-01-01T00:00:00+00:00")
    (user / "card.json").write_text(json.dumps(card))
    check_bundled_listing(copy)
    listed = {r["name"]: r for r in list_runs(copy)}
    assert set(listed) == {*BUNDLED, user.name} and not listed[user.name].is_bundled
    assert sorted(p.name for p in copy.iterdir() if (p / "card.json").is_file()) != BUNDLED  # the old rule broke here


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_is_small_complete_and_reproducible(name):
    from medclf_core.inference.lite_export import LITE_FILE, LITE_META

    run = MODELS / name
    # the LiteRT files are derived from model.keras on the machine (scripts/app.sh, export-lite), not committed
    size = sum(f.stat().st_size for f in run.iterdir() if f.name not in (LITE_FILE, LITE_META))
    assert size < 25 * 2**20, f"{name} is {size / 2**20:.1f} MB"  # issue 13: each model under 25 MB
    card = json.loads((run / "card.json").read_text())
    assert set(CARD_KEYS) <= set(card)
    assert card["name"] == name
    config = json.loads((REPO / "configs" / f"{name}.json").read_text())
    for key in ("image_size", "channels", "learning_rate", "seed", "group_pattern", "tta", "ensemble",
                "freeze_batchnorm", "init_from", "epochs"):
        if key in config:  # the card records the committed config it was trained from
            assert card["config"][key] == config[key], key
    assert (card.get("ensemble") or {}).get("members", 1) == config.get("ensemble", 1)
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert len(evaluation["predictions"]) == card["metrics"]["n"] > 0
    assert json.loads((run / "history.json").read_text())


@pytest.fixture(scope="module", params=BUNDLED)
def bundled(request):
    return Predictor.from_run(MODELS / request.param)


def test_bundled_model_predicts_and_explains_every_input_kind(bundled, sample_images, dicom_samples):
    files = [*sample_images[:2], *dicom_samples]
    results = bundled.predict_files(files)
    for r in results:
        assert "error" not in r, r
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    pixels = [load_image(f).pixels for f in files]
    maps = heatmaps(bundled.model, pixels, cam_layer=bundled.cam_layer)
    for px, hm in zip(pixels, maps, strict=True):
        assert hm.shape == px.shape[:2] and np.isfinite(hm).all() and hm.max() <= 1.0


def test_the_brain_models_headline_says_tumour_not_yes(sample_images):
    """Its classes are its data folders' names, "no" and "yes"; the card's class_labels give the headline words."""
    brain = Predictor.from_run(MODELS / "brain-mri-tumour")
    result = brain.predict_files(sample_images[:1])[0]
    assert result["label"] in ("no", "yes")  # the exports keep the class names
    title = Prediction(result).headline.title
    assert title.startswith(("tumour (P(tumour)", "no tumour (P(tumour)")), title


def test_chest_model_on_its_try_a_sample_images(sample_images):
    predictor = Predictor.from_run(MODELS / "chest-xray-pneumonia")
    results = predictor.predict_files(sample_images)
    truth = ["NORMAL" if f.name.startswith("normal") else "PNEUMONIA" for f in sample_images]
    assert sum(r["label"] == t for r, t in zip(results, truth, strict=True)) >= len(truth) - 1, results


def test_modality_model_calls_chest_films_xray(sample_images, dicom_samples):
    predictor = Predictor.from_run(MODELS / "imaging-modality")
    films = [*sample_images, *[f for f in dicom_samples if f.name.startswith("CR_")]]
    assert [r["label"] for r in predictor.predict_files(films)] == ["XRAY"] * len(films)


# ---------------------------------------------------------------------------- trust: what the shipped models say


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_card_is_schema_2_pretrained_calibrated_and_gated(name):
    from medclf_core.registry.store import read_card

    card = read_card(MODELS / name)
    assert card["schema_version"] == 2
    assert card["architecture"] == "efficientnet_lite0" and card["pretrained"]["weights"] == "imagenet"
    assert card["recipe"]["name"] == "transfer"
    assert card["intended_use"]["modalities"] and card["intended_use"]["summary"] and card["training_data"]
    assert 0.05 < card["calibration"]["temperature"] < 20
    assert (MODELS / name / "ood.npz").is_file() and card["ood"]["val_fraction_flagged"] <= 0.05
    if len(card["class_names"]) == 2:
        assert card["threshold_rule"]["method"] == "balanced"


def test_chest_model_refuses_brain_and_body_part_images_it_does_not_know(dicom_samples, tmp_path):
    """The committed MR DICOMs, a tibia-free set of fixtures: none of them may come back as a finding."""
    from PIL import Image
    from skimage import data

    predictor = Predictor.from_run(MODELS / "chest-xray-pneumonia")
    photos = []
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        photos.append(path)
    mr = [f for f in dicom_samples if f.name.startswith(("MR_", "CT_"))]
    results = predictor.predict_files([*mr, *photos])
    assert all(r["ood"] is True for r in results), [(r["file"], r.get("ood"), r.get("ood_reason")) for r in results]


def test_chest_model_accepts_its_own_kind_of_image(sample_images):
    predictor = Predictor.from_run(MODELS / "chest-xray-pneumonia")
    results = predictor.predict_files(sample_images)
    assert sum(r["ood"] is False for r in results) >= len(results) - 1, [r.get("ood_score") for r in results]


def test_brain_and_modality_models_flag_chest_films_and_photos(sample_images, tmp_path):
    from PIL import Image
    from skimage import data

    photos = []
    for name in ("astronaut", "coffee", "rocket"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        photos.append(path)
    brain = Predictor.from_run(MODELS / "brain-mri-tumour").predict_files([*sample_images, *photos])
    assert all(r["ood"] is True for r in brain), [(r["file"], r.get("ood_score")) for r in brain]
    modality = Predictor.from_run(MODELS / "imaging-modality").predict_files(photos)
    assert all(r["ood"] is True for r in modality), [(r["file"], r.get("ood_score")) for r in modality]


def test_every_bundled_model_refuses_a_colour_graphic_as_not_a_scan():
    """scikit-image's ``logo`` (a colour graphic) passed the imaging-modality model's feature gate; the colour
    check on the original pixels refuses it on all three bundled models, with the plain reason."""
    from skimage import data

    from medclf_core.trust.colour import COLOUR_REASON

    logo = np.asarray(data.logo())[..., :3]
    for name in ("imaging-modality", "brain-mri-tumour", "chest-xray-pneumonia"):
        (r,) = Predictor.from_run(MODELS / name, router=None).predict([logo])
        assert r["ood"] is True and COLOUR_REASON in r["ood_reason"] and "colour" in r["ood_checks"], (name, r)


def test_the_bundled_router_knows_the_head_and_keeps_the_committed_head_mr(dicom_samples):
    """configs/make_body_part.py's probe is bundled beside the modality model; the body-part check refuses neither
    committed head MR (MR_small, emri_small) on the brain model, and the chest model is not subject to it."""
    brain = Predictor.from_run(MODELS / "brain-mri-tumour")
    probe = brain.router.body_part
    assert probe is not None and probe.n > 1000 and 0 < probe.n_head < probe.n and probe.source.startswith("MedPix")
    assert probe.for_model == brain.router.predictor.card["created"]  # fitted on this modality model's features
    heads = brain.predict_files([f for f in dicom_samples if f.name.startswith("MR_")])
    assert len(heads) == 2 and all("body-part" not in (r["ood_reason"] or "") for r in heads), heads
    chest = Predictor.from_run(MODELS / "chest-xray-pneumonia")
    assert all("body-part" not in (r["ood_reason"] or "") for r in chest.predict_files(dicom_samples))


def test_the_brain_model_refuses_a_diffusion_or_angiography_series_by_its_header(dicom_samples, tmp_path):
    """A brain MRI study in a PACS holds DWI, ADC and angiography series beside T1, T2 and FLAIR; the brain model
    was trained on the latter only, and gave a finding on any of them."""
    import pydicom

    src = next(f for f in dicom_samples if f.name == "MR_MR_small.dcm")
    marked = []
    for name, image_type, angio in (("adc", ["DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND"], None),
                                    ("tof", ["ORIGINAL", "PRIMARY", "M", "ND"], "Y"),
                                    ("dwi", ["ORIGINAL", "PRIMARY", "M", "ND"], None)):
        ds = pydicom.dcmread(src)
        ds.ImageType = image_type
        if angio:
            ds.AngioFlag = angio
        if name == "dwi":  # what ImageType does not say, the standard diffusion attribute does (session 21)
            ds.DiffusionBValue = 1000
        ds.save_as(tmp_path / f"{name}.dcm")
        marked.append(tmp_path / f"{name}.dcm")
    brain = Predictor.from_run(MODELS / "brain-mri-tumour")
    plain, adc, tof, dwi = brain.predict_files([src, *marked])
    assert dwi["ood"] and "a diffusion image (DiffusionBValue 1000)" in dwi["ood_reason"]
    assert "marks it as" not in (plain["ood_reason"] or "")  # the committed head MR (ImageType OTHER) is not refused
    assert adc["ood"] and "an ADC map (ImageType ADC)" in adc["ood_reason"] and "dicom_header" in adc["ood_refused_by"]
    assert tof["ood"] and "an angiography image (AngioFlag Y)" in tof["ood_reason"]


def test_the_brain_card_records_its_fourth_source_and_says_what_else_it_calls_tumour():
    """MedPix (bench/brain_medpix.py): 110 of 178 slices of other brain disease were called tumour. The card records
    that evaluation with the cases its intervals resampled, and says it where a clinician reads a finding."""
    from medclf_core.registry.card_reading import finding_mimics
    from medclf_core.registry.evaluations import list_evaluations

    brain = Predictor.from_run(MODELS / "brain-mri-tumour")
    records = {e["dataset"]: e for e in list_evaluations(brain.card["run_dir"])}
    medpix = records["brain_mri_medpix"]
    assert medpix["n"] == 256 and medpix["n_groups"] == 67 and medpix["n_per_class"] == {"no": 178, "yes": 78}
    assert medpix["metrics"]["specificity"] < 0.5 and records["brain_mri_navoneel_held_out"]["n"] == 87
    assert "110 of 178" in finding_mimics(brain.card) and brain.card["intended_use"]["mr_sequences"] == "structural"
    # session 21: its tumour calls on sagittal and coronal slices follow the plane (28 of 28 sagittal MedPix
    # non-tumour slices called tumour; about 11 non-axial no-tumour slices in its training set)
    assert "28 of 28 sagittal" in finding_mimics(brain.card)
    # and the router's plane probe serves its caution (trust.plane): fitted for this modality model, read back
    assert brain.card["intended_use"]["planes"] == ["axial"] and brain.router.plane is not None
    assert any(item.startswith("sagittal and coronal slices") for item in brain.card["intended_use"]["not_for"])
    assert any("other brain disease" in item for item in brain.card["intended_use"]["not_for"])
