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
    assert r["ood"] is True
    assert "imaging-modality model calls it CT (P(CT) > 99%); this model is for MR" in r["ood_reason"]
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


def _images(n: int, side: int = 32) -> np.ndarray:
    """Prepared inputs (n, side, side, 1) uint8: blobs on noise, each different."""
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:side, :side]
    out = [np.clip(200 * np.exp(-((yy - rng.uniform(0, side)) ** 2 + (xx - rng.uniform(0, side)) ** 2) / 40)
                   + rng.normal(60, 20, (side, side)), 0, 255) for _ in range(n)]
    return np.stack(out).astype(np.uint8)[..., None]


def _lite_run(folder, trunk_from, classes: list[str], card: dict, gate: bool):
    """A run folder with LiteRT files: a small GAP network whose trunk (conv1, conv2) has the weights of
    ``trunk_from`` (a Keras model) or of a fresh seeded init, and a head of its own."""
    import keras

    from medclf_core.inference.lite_export import write_lite
    from medclf_core.io.atomic import write_json
    from medclf_core.models.head import classifier_head
    from medclf_core.registry.store import CARD_FILE, MODEL_FILE, load_run
    from medclf_core.trust.features import features_and_probabilities
    from medclf_core.trust.ood import fit_gate

    keras.utils.set_random_seed(len(classes) + (0 if trunk_from is not None else 7))
    inputs = keras.Input((32, 32, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for i, f in enumerate((6, 8), 1):
        x = keras.layers.Conv2D(f, 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, classifier_head(x, len(classes), 0, 0.3), name=folder.name)
    if trunk_from is not None:
        for name in ("conv1", "conv2"):
            model.get_layer(name).set_weights(trunk_from.get_layer(name).get_weights())
    head = model.get_layer("predictions")
    rng = np.random.default_rng(len(classes))
    head.set_weights([w + rng.normal(0, 2.0, w.shape).astype(np.float32) for w in head.get_weights()])
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    write_json(folder / CARD_FILE, {"name": folder.name, "class_names": classes, "cam_layer": "conv2_relu",
                                    "architecture": "gap-cnn", "input_shape": [32, 32, 1], **card})
    if gate:
        feats, probs = features_and_probabilities(model, _images(24))
        fit_gate(feats[:16], probs[:16].argmax(1), feats[16:], percentile=90).save(folder)
    assert write_lite(*load_run(folder), folder) is not None
    return model


@pytest.fixture(scope="module")
def lite_runs(tmp_path_factory):
    """On LiteRT: a modality router, an MR model on the router's own trunk (both frozen-trunk heads, as the
    bundled chest X-ray and modality models), and one on another trunk (as the fine-tuned brain model)."""
    root = tmp_path_factory.mktemp("shared-trunk")
    router_model = _lite_run(root / "modality", None, ["CT", "MRI", "XRAY"], {}, gate=False)
    _lite_run(root / "same-trunk", router_model, ["no", "yes"], {**BRAIN_CARD, "class_names": ["no", "yes"]},
              gate=True)
    _lite_run(root / "own-trunk", None, ["no", "yes"], {**BRAIN_CARD, "class_names": ["no", "yes"]}, gate=True)
    router = ModalityRouter(Predictor.from_run(root / "modality", tta=(), router=None))
    out = {"router": router}
    for name in ("same-trunk", "own-trunk"):
        out[name] = Predictor.from_run(root / name, router=None)
        out[name].router = router
    assert router.predictor.lite is not None and all(out[n].lite is not None for n in ("same-trunk", "own-trunk"))
    return out


def test_a_router_on_the_main_models_frozen_trunk_reads_its_features_instead_of_a_second_pass(lite_runs,
                                                                                              monkeypatch):
    routed, router = lite_runs["same-trunk"], lite_runs["router"]
    assert router.shares_trunk_with(routed)
    prepared = _images(6)
    own = router.probabilities(prepared)  # the router's own forward pass
    _, features = routed.predict_batch_with_features(prepared)
    calls = _counted(router.predictor.lite, monkeypatch)
    shared = router.probabilities(prepared, features, routed=routed)
    assert calls == []  # no pass of the router's own
    for a, b in zip(own, shared, strict=True):
        assert a.keys() == b.keys() and all(abs(a[c] - b[c]) < 1e-5 for c in a)
    assert len({max(p, key=p.get) for p in own}) > 1 or max(max(p.values()) for p in own) < 0.99  # not constant
    results = routed.predict(list(prepared[..., 0]))
    assert calls == []  # Predictor.predict routes through the shared features too
    monkeypatch.undo()
    routed.router = None
    unrouted = routed.predict(list(prepared[..., 0]))
    routed.router = router
    assert [r["probabilities"] for r in results] == [r["probabilities"] for r in unrouted]


def test_a_model_on_another_trunk_keeps_the_routers_own_pass(lite_runs, monkeypatch):
    routed, router = lite_runs["own-trunk"], lite_runs["router"]  # as the fine-tuned brain model
    assert not router.shares_trunk_with(routed)
    prepared = _images(4)
    _, features = routed.predict_batch_with_features(prepared)
    calls = _counted(router.predictor.lite, monkeypatch)
    shared = router.probabilities(prepared, features, routed=routed)
    assert calls and shared == router.probabilities(prepared)


def test_shares_trunk_needs_the_same_input_and_feature_size(lite_runs):
    from medclf_core.inference.router import probe_images, shares_trunk

    lite = lite_runs["same-trunk"].lite

    class Other:  # another input size: no pass is run to tell
        image_size, channels, feature_dim = 64, 1, lite.feature_dim

    assert not shares_trunk(lite, Other()) and shares_trunk(lite, lite)
    probes = probe_images(32, 3)
    assert probes.shape == (3, 32, 32, 3) and probes.min() >= 0 and probes.max() <= 255
    assert len({p.tobytes() for p in probes}) == 3


def test_a_routers_body_part_probe_lets_a_model_for_the_head_refuse_another_body_part(tmp_path):
    from medclf_core.trust.body_part import BodyPartProbe

    router_model = _lite_run(tmp_path / "modality", None, ["CT", "MRI", "XRAY"], {}, gate=True)  # gated: features
    head_card = {"class_names": ["no", "yes"], "intended_use": {"modalities": ["MR"], "body_parts": ["BRAIN"]}}
    _lite_run(tmp_path / "brain", router_model, ["no", "yes"], head_card, gate=True)
    modality = Predictor.from_run(tmp_path / "modality", tta=(), router=None)
    prepared = _images(3)
    for intercept, refused in ((-6.0, True), (6.0, False)):  # P(head) ~0.002 for every image, then ~0.998
        probe = BodyPartProbe(coef=np.zeros(8, np.float32), intercept=intercept, n=2, n_head=1, source="", fitted="")
        router = ModalityRouter(modality, body_part=probe)
        heads = [p["HEAD"] for p in router.probabilities(prepared)]
        assert all((h < 0.01) == refused and (h > 0.99) != refused for h in heads)
        brain = Predictor.from_run(tmp_path / "brain", router=None)
        brain.router = router
        for r in brain.predict(list(prepared[..., 0])):
            assert ("body-part check calls it another body part" in (r["ood_reason"] or "")) == refused
            assert not refused or r["ood"] is True


def test_a_routers_plane_probe_cautions_a_model_that_judges_axial_slices_only(tmp_path):
    """Session 21: the brain model calls every sagittal slice tumour. With ``intended_use.planes: ["axial"]``, an
    image the router's plane probe puts in another plane is answered with a caution, never refused."""
    from medclf_core.trust.plane import PlaneProbe

    router_model = _lite_run(tmp_path / "modality", None, ["CT", "MRI", "XRAY"], {}, gate=True)  # gated: features
    card = {"class_names": ["no", "yes"], "intended_use": {"planes": ["axial"]}}  # no modality: no refusal by it
    _lite_run(tmp_path / "brain", router_model, ["no", "yes"], card, gate=True)
    modality = Predictor.from_run(tmp_path / "modality", tta=(), router=None)
    prepared = _images(3)
    for intercept, sagittal in (([0.0, 6.0, 0.0], True), ([6.0, 0.0, 0.0], False)):  # every image one plane
        probe = PlaneProbe(coef=np.zeros((3, 8), np.float32), intercept=np.array(intercept), n=3, source="",
                           fitted="")
        router = ModalityRouter(modality, plane=probe)
        assert all((p["SAGITTAL"] > 0.99) == sagittal for p in router.probabilities(prepared))
        brain = Predictor.from_run(tmp_path / "brain", router=None)
        brain.router = router
        for r in brain.predict(list(prepared[..., 0])):
            assert ("it looks like a sagittal slice" in (r["unfamiliar_reason"] or "")) == sagittal
            assert ("plane" in r["unfamiliar_checks"]) == sagittal and "plane check" not in (r["ood_reason"] or "")
