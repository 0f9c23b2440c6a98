"""medclf_core.inference.router: the imaging-modality model as a router, with tiny real Keras models (no stubs)."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.inference.predictor import Predictor
from medclf_core.inference.router import ModalityRouter, router_for, wants_router

MODALITY_CARD = {"name": "modality", "class_names": ["CT", "MRI", "XRAY"]}
BRAIN_CARD = {"name": "brain", "class_names": ["no", "yes"], "intended_use": {"modalities": ["MR"]}}


def _model(classes: int, side: int, channels: int, sure_of: int | None = None):
    """A tiny untrained model; ``sure_of``: its classifier's bias set so it gives that class P ~ 1 on any image."""
    from medclf_core.models.architectures import build_model

    model = build_model("simple_cnn", classes, side, channels)
    if sure_of is not None:
        w, b = model.get_layer("predictions").get_weights()
        b = np.full_like(b, -10.0)
        b[sure_of] = 10.0
        model.get_layer("predictions").set_weights([np.zeros_like(w), b])
    return model


@pytest.fixture(scope="module")
def ct_router():
    return ModalityRouter(Predictor(_model(3, 40, 3, sure_of=0), MODALITY_CARD, tta=()))


def test_router_probabilities_from_another_input_size(ct_router):
    prepared = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)  # the main model's input
    probs = ct_router.probabilities(prepared)
    assert len(probs) == 2 and set(probs[0]) == {"CT", "MRI", "XRAY"}
    assert all(sum(p.values()) == pytest.approx(1.0) for p in probs) and probs[0]["CT"] > 0.99
    assert ct_router.probabilities(np.zeros((0, 32, 32, 1), np.uint8)) == []
    with pytest.raises(ValueError, match="classes"):
        ModalityRouter(Predictor(_model(2, 32, 1), {"class_names": ["a", "b"]}))


def test_a_model_for_mr_refuses_what_the_router_calls_ct(ct_router):
    brain = Predictor(_model(2, 32, 1), BRAIN_CARD, tta=(), router=ct_router)
    pixels = np.random.default_rng(1).integers(0, 256, (48, 48), dtype=np.uint8)
    (r,) = brain.predict([pixels])
    assert r["ood"] is True and "imaging-modality model calls it CT (P = 1.00); this model is for MR" in r["ood_reason"]
    assert "modality_router" in r["ood_checks"]
    mri_router = ModalityRouter(Predictor(_model(3, 40, 3, sure_of=1), MODALITY_CARD, tta=()))
    (r,) = Predictor(_model(2, 32, 1), BRAIN_CARD, tta=(), router=mri_router).predict([pixels])
    assert r["ood"] is not True and r["ood_reason"] is None
    (r,) = Predictor(_model(2, 32, 1), BRAIN_CARD, tta=()).predict([pixels])  # no router: no such check
    assert "modality_router" not in r["ood_checks"]


def test_router_for_declared_modalities_only_and_loaded_once(tmp_path):
    assert wants_router(BRAIN_CARD) and not wants_router(MODALITY_CARD | {"intended_use": {"modalities": ["CT"]}})
    assert not wants_router({"class_names": ["a", "b"]}) and not wants_router(
        {"class_names": ["a", "b"], "intended_use": {"modalities": ["US"]}})
    loads = []

    def load(run_dir):
        loads.append(run_dir)
        return Predictor(_model(3, 32, 1), MODALITY_CARD, tta=())

    assert router_for(BRAIN_CARD, load, tmp_path) is None  # no imaging-modality model in this folder
    (tmp_path / "imaging-modality").mkdir()
    (tmp_path / "imaging-modality" / "model.keras").write_bytes(b"")
    first = router_for(BRAIN_CARD, load, tmp_path)
    assert isinstance(first, ModalityRouter) and router_for(BRAIN_CARD, load, tmp_path) is first
    assert len(loads) == 1 and router_for(MODALITY_CARD, load, tmp_path) is None


def _counted(lite, monkeypatch) -> list:
    """Count the forward passes of a LiteModel (its ``run``, which ``forward`` calls), until the test ends."""
    calls = []
    run = lite.run

    def counting(x):
        calls.append(len(x))
        return run(x)

    monkeypatch.setattr(lite, "run", counting)
    return calls


@pytest.fixture(scope="module")
def bundled():
    """The bundled chest X-ray and brain MRI models on LiteRT, each with the bundled modality router."""
    from helpers import REPO

    return {name: Predictor.from_run(REPO / "models" / name) for name in ("chest-xray-pneumonia", "brain-mri-tumour")}


def _samples(predictor) -> np.ndarray:
    from helpers import SAMPLES
    from medclf_core.io.images import load_image

    files = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[:3] + sorted((SAMPLES / "dicom").glob("*.dcm"))
    return np.stack([predictor.prepare(load_image(f.read_bytes()).pixels) for f in files])


def test_a_router_on_the_main_models_frozen_trunk_reads_its_features_instead_of_a_second_pass(bundled, monkeypatch):
    chest = bundled["chest-xray-pneumonia"]
    router = chest.router
    assert chest.lite is not None and router.predictor.lite is not None
    assert router.shares_trunk_with(chest)  # both linear probes on ImageNet EfficientNet-Lite0, 224 px grayscale
    prepared = _samples(chest)
    own = router.probabilities(prepared)  # the router's own forward pass
    _, features = chest.predict_batch_with_features(prepared)
    calls = _counted(router.predictor.lite, monkeypatch)
    shared = router.probabilities(prepared, features, routed=chest)
    assert calls == []  # no pass of the router's own
    for a, b in zip(own, shared, strict=True):
        assert a.keys() == b.keys() and all(abs(a[c] - b[c]) < 1e-5 for c in a)
    assert any(max(p, key=p.get) != "XRAY" for p in own) and any(max(p, key=p.get) == "XRAY" for p in own)
    chest.lite.forget()
    assert [r["ood"] for r in chest.predict(list(prepared[..., 0]))] == [r["ood"] for r in
                                                                         chest.predict(list(prepared[..., 0]))]
    assert calls == []  # Predictor.predict routes through the shared features too


def test_a_fine_tuned_trunk_keeps_the_routers_own_pass(bundled, monkeypatch):
    brain = bundled["brain-mri-tumour"]  # top blocks fine-tuned: other features than the modality model's
    router = brain.router
    assert not router.shares_trunk_with(brain)
    prepared = _samples(brain)
    calls = _counted(router.predictor.lite, monkeypatch)
    _, features = brain.predict_batch_with_features(prepared)
    shared = router.probabilities(prepared, features, routed=brain)
    assert calls and shared == router.probabilities(prepared)


def test_shares_trunk_needs_the_same_input_and_feature_size(bundled):
    from medclf_core.inference.router import probe_images, shares_trunk

    chest = bundled["chest-xray-pneumonia"].lite

    class Other:  # another input size: no pass is run to tell
        image_size, channels, feature_dim = 112, 1, chest.feature_dim

    assert not shares_trunk(chest, Other()) and shares_trunk(chest, chest)
    probes = probe_images(32, 3)
    assert probes.shape == (3, 32, 32, 3) and probes.min() >= 0 and probes.max() <= 255
    assert len({p.tobytes() for p in probes}) == 3
