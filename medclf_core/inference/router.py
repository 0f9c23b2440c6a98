"""The bundled imaging-modality model as a router in front of another model (issue 24: "not this kind of image").

A model whose card declares its modalities (``intended_use.modalities``: MR, CT, CR/DX ...) gets a
:class:`ModalityRouter`: the bundled ``imaging-modality`` model (classes CT, MRI, XRAY) gives each image's
modality probabilities, and :func:`medclf_core.trust.population.router_reason` refuses an image it calls
another modality with P >= 0.9. The router is loaded once per process (:func:`router_for`, cached) and runs
on the inputs the main model already prepared, resized to its own input (no second decode). The modality model
itself, and a card that declares no modality the router knows, get no router.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medclf_core.io.images import to_model_input
from medclf_core.registry.store import default_models_dir
from medclf_core.trust.population import ROUTER_CLASSES, router_classes

ROUTER_MODEL = "imaging-modality"


class ModalityRouter:
    """Modality probabilities (``{"CT": p, "MRI": p, "XRAY": p}``) of images, from a modality Predictor."""

    def __init__(self, predictor):
        if set(predictor.class_names) != set(ROUTER_CLASSES):
            raise ValueError(f"A modality router needs the classes {sorted(ROUTER_CLASSES)}, "
                             f"not {predictor.class_names}.")
        self.predictor = predictor

    def probabilities(self, prepared: np.ndarray) -> list[dict[str, float]]:
        """One ``{class: probability}`` per image of ``prepared`` ((N, S, S, C) uint8, any S and C)."""
        if not len(prepared):
            return []
        p = self.predictor
        batch = np.stack([to_model_input(np.asarray(x)[..., 0] if x.shape[-1] == 1 else np.asarray(x),
                                         p.image_size, p.channels) for x in prepared])
        probs = p.predict_batch(batch)
        return [{c: float(row[i]) for i, c in enumerate(p.class_names)} for row in probs]


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
            _ROUTERS[str(run)] = ModalityRouter(load(str(run)))
        return _ROUTERS[str(run)]
