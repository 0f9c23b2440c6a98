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
