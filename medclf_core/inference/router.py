"""The bundled imaging-modality model as a router in front of another model (issue 24: "not this kind of image").

A model whose card declares its modalities (``intended_use.modalities``: MR, CT, CR/DX ...) gets a
:class:`ModalityRouter`: the bundled ``imaging-modality`` model (classes CT, MRI, XRAY) gives each image's
modality probabilities, and :func:`medclf_core.trust.population.router_reason` refuses an image it calls
another modality with P >= 0.9. The router is loaded once per process (:func:`router_for`, cached) and runs
on the inputs the main model already prepared, resized to its own input (no second decode). The modality model
itself, and a card that declares no modality the router knows, get no router.

When the main model and the router are heads on one frozen trunk (both linear probes on ImageNet
EfficientNet-Lite0 at the same input, as the bundled chest X-ray and modality models), the router reads the
features the main model's pass already computed instead of running that trunk a second time (~35 ms of each
prediction on one CPU thread). :func:`shares_trunk` decides it once per pair, on probe images, so a fine-tuned
trunk (the brain model's) keeps its own pass.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medclf_core.io.images import to_model_input
from medclf_core.registry.store import default_models_dir
from medclf_core.trust.body_part import HEAD, BodyPartProbe, load_probe
from medclf_core.trust.calibration import apply_temperature
from medclf_core.trust.plane import PlaneProbe, load_plane_probe
from medclf_core.trust.population import ROUTER_CLASSES, router_classes

ROUTER_MODEL = "imaging-modality"


class ModalityRouter:
    """Modality probabilities (``{"CT": p, "MRI": p, "XRAY": p}``) of images, from a modality Predictor."""

    def __init__(self, predictor, body_part: BodyPartProbe | None = None, plane: PlaneProbe | None = None):
        if set(predictor.class_names) != set(ROUTER_CLASSES):
            raise ValueError(f"A modality router needs the classes {sorted(ROUTER_CLASSES)}, "
                             f"not {predictor.class_names}.")
        self.predictor = predictor
        self.body_part = body_part  # its P(head) joins each image's probabilities as "HEAD" (trust.body_part)
        self.plane = plane  # its P(axial / sagittal / coronal) join them as "AXIAL", ... (trust.plane)
        self._shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # routed LiteModel -> shares_trunk
        self._lock = threading.Lock()

    def probabilities(self, prepared: np.ndarray, features: np.ndarray | None = None,
                      routed=None) -> list[dict[str, float]]:
        """One ``{class: probability}`` per image of ``prepared`` ((N, S, S, C) uint8, any S and C): from the
        ``features`` (N, D) that the ``routed`` Predictor computed on them when the two share a trunk, else from
        the router's own forward pass; with a body-part probe, also ``"HEAD"``: its P(head); with a plane probe,
        also ``"AXIAL"``, ``"SAGITTAL"`` and ``"CORONAL"``."""
        if not len(prepared):
            return []
        p = self.predictor
        if features is not None and routed is not None and self.shares_trunk_with(routed):
            probs = apply_temperature(p.lite.probabilities_of(features), p.temperature, positive=p.positive)
        else:
            batch = np.stack([to_model_input(np.asarray(x)[..., 0] if x.shape[-1] == 1 else np.asarray(x),
                                             p.image_size, p.channels) for x in prepared])
            probs, features = p.predict_batch_with_features(batch)
        out = [{c: float(row[i]) for i, c in enumerate(p.class_names)} for row in probs]
        if self.body_part is not None and features is not None:
            for row, p_head in zip(out, self.body_part.p_head(features), strict=True):
                row[HEAD] = float(p_head)
        if self.plane is not None and features is not None:
            for row, planes in zip(out, self.plane.probabilities(features), strict=True):
                row.update(planes)
        return out

    def shares_trunk_with(self, routed) -> bool:
        """:func:`shares_trunk` of ``routed`` and the router, decided once per routed model."""
        if routed.lite is None or self.predictor.lite is None or self.predictor.tta:
            return False
        with self._lock:
            if routed.lite not in self._shared:
                self._shared[routed.lite] = shares_trunk(routed.lite, self.predictor.lite)
            return self._shared[routed.lite]


def probe_images(size: int, channels: int) -> np.ndarray:
    """Three float32 inputs (3, size, size, channels) in 0..255 that no two different trunks map to the same
    features: flat mid-grey, a diagonal gradient, seeded noise."""
    ramp = np.add.outer(np.arange(size), np.arange(size)) * (255.0 / max(2 * size - 2, 1))
    noise = np.random.default_rng(0).uniform(0, 255, (size, size))
    images = np.stack([np.full((size, size), 127.0), ramp, noise]).astype(np.float32)
    return np.repeat(images[..., None], channels, axis=3)


def shares_trunk(a, b, tolerance: float = 1e-4) -> bool:
    """True when LiteRT models ``a`` and ``b`` (:class:`~medclf_core.inference.lite.LiteModel`) take the same
    input and give the same classifier features on :func:`probe_images` (within ``tolerance`` of their
    largest value): then they differ in their heads only, and one forward pass serves both."""
    if (a.image_size, a.channels, a.feature_dim) != (b.image_size, b.channels, b.feature_dim):
        return False
    probes = probe_images(a.image_size, a.channels)
    fa, fb = a.forward(probes)[1], b.forward(probes)[1]
    return bool(np.max(np.abs(fa - fb)) <= tolerance * max(float(np.max(np.abs(fa))), 1e-6))


def wants_router(card: dict) -> bool:
    """True when ``card`` declares a modality the router knows and is not itself a modality model."""
    if set(card.get("class_names") or []) == set(ROUTER_CLASSES):
        return False
    use = card.get("intended_use")
    return isinstance(use, dict) and bool(router_classes(use))


_ROUTERS: dict[str, ModalityRouter] = {}
_LOCK = threading.Lock()


def router_for(card: dict, load: Callable[[str], object], models_dir: str | os.PathLike | None = None
               ) -> ModalityRouter | None:
    """The router for a model with this card, or None (no modality declared, the modality model itself, or
    no bundled ``imaging-modality`` model in the models folder). ``load(run_dir)`` builds the modality
    Predictor; it runs once per process and folder (the router is cached)."""
    if not wants_router(card):
        return None
    folder = Path(models_dir) if models_dir else default_models_dir()
    run = (folder / ROUTER_MODEL).resolve()
    if not (run / "model.keras").is_file():
        return None
    with _LOCK:
        if str(run) not in _ROUTERS:
            predictor = load(str(run))
            created = predictor.card.get("created", "")
            _ROUTERS[str(run)] = ModalityRouter(predictor, body_part=load_probe(run, for_model=created),
                                                plane=load_plane_probe(run, for_model=created))
        return _ROUTERS[str(run)]
