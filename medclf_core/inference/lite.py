"""The fast-start backend: a run's ``model.tflite`` on LiteRT, with no TensorFlow in the process.

Importing TensorFlow and Keras costs ~5 s of one core and loading and tracing a model ~3 s more, all before
a server's first prediction; LiteRT (``ai-edge-litert``, Google's TFLite runtime) imports in ~0.1 s and
loads and runs the same float32 graph in ~0.2 s. :func:`load_lite` returns a :class:`LiteModel` for a run
whose files (:mod:`medclf_core.inference.lite_export`) match its ``model.keras``, else None and a log line
saying why (the :class:`~medclf_core.inference.predictor.Predictor` then uses TensorFlow as before).

One forward pass gives the probabilities and the heat-map layer's activations ``A`` (N, h, w, D). The
model's classifier is linear on their spatial mean, so with ``W`` the centred logits' kernel
(:func:`~medclf_core.inference.lite_export.centred_logits`) and ``s_c = sum_k W_kc mean_ij A_ijk + b_c`` the
class score the maps explain (:mod:`medclf_core.explain.views`), ``d s_c / d A_ijk = W_kc / (h w)`` for every
cell, and tf-keras-vis' formulas (:func:`medclf_core.explain.cams._compiled_cam_function`) reduce to:

- Grad-CAM: weights ``mean_ij grad = W_kc / (h w)``: map ``ReLU(sum_k W_kc A_ijk) / (h w)``;
- Grad-CAM++: the gradient is constant over the grid, so the normalised alphas are ``1 / (h w)`` and the
  weights ``ReLU(W_kc) / (h w)``: map ``ReLU(sum_k ReLU(W_kc) A_ijk) / (h w)``.

Both are scaled by their peak afterwards (:func:`medclf_core.explain.geometry.to_image_heatmap`), so the
``1 / (h w)`` goes too. For a two-class softmax ``W_c = (w_c - w_other) / 2``: the log-odds' weights, halved.
Score-CAM is medclf's own (:func:`medclf_core.explain.scorecam.scorecam_maps`) on these activations and the
logits of its masked inputs; the faithfulness check reads the same logits. Only the ``tf-keras-vis`` engine
needs the Keras model (loaded on first use).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from medclf_core.inference.lite_export import LITE_FILE, LITE_META, NO_FAST_PATH, OUTPUTS, file_sha256
from medclf_core.registry.store import MODEL_FILE
from medclf_core.trust.calibration import softmax

#: ``MEDCLF_BACKEND=keras`` turns the fast path off (TensorFlow for everything, as before it existed).
BACKEND_ENV = "MEDCLF_BACKEND"
FAST_METHODS = ("gradcam", "gradcam++", "scorecam")
#: LiteRT threads per model. One: on the 2-core benchmark machine a second (spinning) XNNPACK thread made the
#: browser's warm uploads slower (median 0.51 s against 0.41 s), while one pass is ~35 ms either way.
THREADS = 1
#: Forward passes kept (~0.25 MB each at 224 px): a page's map of the image it has just predicted costs no pass.
KEPT_PASSES = 8
#: Rows per interpreter call. One: a batch of another size makes LiteRT resize its input and allocate its
#: tensors again, holding the GIL (~0.12 s for the faithfulness check's 38 rows, and again back to one row
#: for the next prediction), which kept Streamlit's server from sending the overlay the browser was waiting
#: for; on one thread a row at a time is as fast (the check 0.38 s against 0.44 s) and gives the same numbers
#: (docs/BENCHMARKS.md, session 16).
ROWS_PER_CALL = 1
log = logging.getLogger(__name__)


class LiteModel:
    """A run's LiteRT model with its classifier's centred logits: probabilities, features, logits and
    Grad-CAM / Grad-CAM++ maps from one forward pass, the last :data:`KEPT_PASSES` of which are kept by input
    (a prediction and then its map: one pass). Calls are serialised (a LiteRT interpreter is not thread-safe)."""

    def __init__(self, interpreter, meta: dict):
        self._runner = interpreter.get_signature_runner()
        detail = interpreter.get_input_details()[0]
        self.image_size, self.channels = int(detail["shape"][1]), int(detail["shape"][3])
        self.kernel = np.asarray(meta["kernel"], np.float64)
        self.bias = np.asarray(meta["bias"], np.float64)
        self.n_classes, self.feature_dim = self.kernel.shape[1], self.kernel.shape[0]
        self.cam_layer: str = meta["cam_layer"]
        self.geometry = meta.get("geometry")
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (N, K) float64, activations (N, h, w, D) float32)`` of float32 inputs (N, S, S, C);
        read-only arrays (they may be kept for the same input's next call)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        key = (x.shape, hashlib.blake2b(x.data, digest_size=16).digest()) if len(x) <= 4 else None
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
            outs = [self._runner(image=x[i:i + ROWS_PER_CALL]) for i in range(0, max(len(x), 1), ROWS_PER_CALL)]
            result = (np.concatenate([np.asarray(o[OUTPUTS[1]], np.float64) for o in outs]),
                      np.concatenate([np.asarray(o[OUTPUTS[0]], np.float32) for o in outs]))
            for a in result:
                a.flags.writeable = False
            if key is not None:
                self._kept[key] = result
                while len(self._kept) > KEPT_PASSES:
                    self._kept.popitem(last=False)
        return result

    def forget(self) -> None:
        """Drop the kept forward passes (a benchmark's repeats of one image then each pay their pass)."""
        with self._lock:
            self._kept.clear()

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, features (N, D))``: the features are the classifier's input, the activations'
        spatial mean (as :func:`medclf_core.trust.features.feature_model` reads them)."""
        probs, acts = self.run(x)
        return probs, acts.mean(axis=(1, 2))

    def probabilities_of(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) float64 of this model's classifier on ``features`` (N, D) that were not computed by
        its own forward pass (a softmax of the centred logits: the same probabilities, as centring leaves a softmax
        unchanged). For another model with the same trunk (:func:`medclf_core.inference.router.shares_trunk`)."""
        return softmax(np.asarray(features, np.float64) @ self.kernel + self.bias, axis=1)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The centred pre-softmax logits (N, K) the heat maps explain (:func:`medclf_core.explain.views.logits_view`)."""
        return self._logits_of(self.run(x)[1])

    def _logits_of(self, acts: np.ndarray) -> np.ndarray:
        return acts.mean(axis=(1, 2), dtype=np.float64) @ self.kernel + self.bias

    def raw_cams(self, x: np.ndarray, method: str, indices: np.ndarray, max_channels: int = 16) -> np.ndarray:
        """Grad-CAM, Grad-CAM++ or Score-CAM maps (N, h, w) at the layer's resolution, ReLU applied, not scaled
        (Score-CAM on at most ``max_channels`` channels, as :func:`medclf_core.explain.cams.heatmaps`)."""
        if method not in FAST_METHODS:
            raise ValueError(f"The LiteRT backend computes {', '.join(FAST_METHODS)} maps, not '{method}'.")
        acts = self.run(x)[1]
        if method == "scorecam":
            from medclf_core.explain.scorecam import scorecam_maps

            return scorecam_maps(x, acts, self._logits_of(acts), indices, max_channels, self.geometry, self.logits)
        weights = self.kernel[:, np.asarray(indices, np.int64)].T  # (N, D)
        if method == "gradcam++":
            weights = np.maximum(weights, 0.0)
        return np.maximum(np.einsum("nijd,nd->nij", acts, weights.astype(np.float32)), 0.0)


def backend_choice() -> str:
    """``"auto"`` (LiteRT when a run has valid files, else TensorFlow) or ``"keras"`` (``MEDCLF_BACKEND``)."""
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "keras"):
        log.warning("%s=%s is not auto or keras; using auto.", BACKEND_ENV, choice)
        return "auto"
    return choice


def lite_mismatch(run_dir: str | os.PathLike) -> tuple[str | None, dict | None]:
    """``(why not, sidecar)``: why a run's fast-path files cannot be used (None: they can, and the sidecar). A
    sidecar that records "no fast path" for this very ``model.keras`` comes back too, beside its why: the files
    are then current (``export-lite --stale`` skips the run), though not usable."""
    run_dir = Path(run_dir)
    meta_path, lite_path = run_dir / LITE_META, run_dir / LITE_FILE
    if not meta_path.is_file():
        return f"no {LITE_FILE} with its {LITE_META}", None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("model_sha256") != file_sha256(run_dir / MODEL_FILE):
            return f"{LITE_FILE} was made from another {MODEL_FILE} (regenerate it: medclf export-lite)", None
        if meta.get(NO_FAST_PATH):
            return f"no fast path: {meta[NO_FAST_PATH]}", meta
        if not lite_path.is_file():
            return f"no {LITE_FILE} with its {LITE_META}", None
        if meta.get("tflite_sha256") != file_sha256(lite_path):
            return f"{LITE_FILE} does not match the checksum in {LITE_META}", None
        if not isinstance(meta.get("kernel"), list) or not isinstance(meta.get("cam_layer"), str):
            return f"{LITE_META} has no classifier weights", None
    except (OSError, ValueError) as exc:
        return f"{LITE_META} cannot be read ({type(exc).__name__})", None
    return None, meta


def load_lite(run_dir: str | os.PathLike, card: dict) -> LiteModel | None:
    """The run's :class:`LiteModel`, or None (logged) when ``MEDCLF_BACKEND=keras``, its files are missing or
    stale, LiteRT is not installed, or the model does not fit the card."""
    if backend_choice() == "keras":
        return None
    why, meta = lite_mismatch(run_dir)
    if why is None and meta.get("cam_layer") != card.get("cam_layer"):
        why = f"{LITE_META} was made for heat-map layer {meta.get('cam_layer')}, the card names {card.get('cam_layer')}"
    if why is None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            why = "LiteRT (ai-edge-litert) is not installed"
    if why is None:
        try:
            model = LiteModel(Interpreter(model_path=str(Path(run_dir) / LITE_FILE), num_threads=THREADS), meta)
        except (ValueError, RuntimeError, KeyError, IndexError) as exc:
            why = f"LiteRT cannot load {LITE_FILE} ({type(exc).__name__}: {str(exc)[:120]})"
    if why is None and len(card.get("class_names") or [None] * model.n_classes) != model.n_classes:
        why = f"{LITE_FILE} has {model.n_classes} outputs, the card lists {len(card['class_names'])} classes"
    if why is not None:
        log.info("%s is served by TensorFlow: %s.", Path(run_dir).name, why)
        return None
    return model


def lite_heatmaps(model: LiteModel, arrays, x: np.ndarray, method: str, indices: np.ndarray,
                  batch_size: int = 16, max_channels: int = 16) -> list[np.ndarray]:
    """Maps in [0, 1] at each image's size, as :func:`medclf_core.explain.cams.heatmaps` gives them, from the
    prepared inputs ``x`` (N, S, S, C) of ``arrays`` and one class index per image."""
    from medclf_core.explain.geometry import to_image_heatmap

    out: list[np.ndarray] = []
    for start in range(0, len(x), batch_size):
        cams = model.raw_cams(np.asarray(x[start:start + batch_size], np.float32), method,
                              indices[start:start + batch_size], max_channels)
        out.extend(to_image_heatmap(cam, im, model.geometry, model.image_size)
                   for im, cam in zip(arrays[start:start + batch_size], cams, strict=True))
    return out
