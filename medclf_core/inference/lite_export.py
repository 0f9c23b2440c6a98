"""Write a run's fast-start artefact: ``model.tflite`` (LiteRT) and its sidecar, beside ``model.keras``.

The Keras model stays the source of truth. For a model whose classifier is linear on the global average of
its heat-map layer (``cam layer -> GlobalAveragePooling2D -> [Dropout] -> Dense "predictions"``: the
EfficientNet-Lite transfer models, ``bn_cnn`` without its hidden Dense), one LiteRT forward pass gives
everything the Predict page shows first, with no TensorFlow in the process
(:mod:`medclf_core.inference.lite`): the probabilities, the heat-map layer's activations ``A`` (N, h, w, D),
the trust gate's features (their spatial mean: GAP, Dropout is the identity at inference) and the Grad-CAM
and Grad-CAM++ maps in closed form from ``A`` and the head's weights.

Files (written atomically, the ``.tflite`` first, the sidecar last):

- ``model.tflite``: float32, no quantisation, one signature ``serving_default(image) -> {"activations",
  "probabilities"}``, batch dimension free.
- ``model.tflite.json``: ``model_sha256`` (of the ``model.keras`` it was made from), ``tflite_sha256``,
  ``cam_layer``, the receptive-field ``geometry`` of that layer, and the centred logits' ``kernel`` (D, K)
  and ``bias`` (K): what :mod:`medclf_core.explain.views` differentiates (the head's affine part, a one-unit
  sigmoid head as ``[-z/2, z/2]``, minus the mean over classes).

A run whose files do not match (retrained, copied without the sidecar) is served by TensorFlow as before.
A model with no fast path gets a sidecar alone, ``{"model_sha256", "no_fast_path": why}``: its files are then
current (:func:`recorded_no_fast_path`), so ``export-lite --stale``, which ``scripts/app.sh`` runs before every
server start, does not load it (and TensorFlow) again until its ``model.keras`` changes.
:func:`lite_problem` says why a model has no fast path. Regenerate the shipped models' files after a
retraining with ``python -m medclf_core export-lite --all`` (or one run name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medclf_core.errors import MedclfError, brief
from medclf_core.io.atomic import json_text, write_bytes_atomically
from medclf_core.models.graph import producer
from medclf_core.registry.store import MODEL_FILE, load_run

LITE_FILE = "model.tflite"
LITE_META = "model.tflite.json"
OUTPUTS = ("activations", "probabilities")
HEAD_LAYER = "predictions"
#: The sidecar's key for a model with no fast path: why, beside the ``model_sha256`` it was said of (no ``.tflite``).
NO_FAST_PATH = "no_fast_path"
log = logging.getLogger(__name__)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lite_problem(model, cam_layer: str | None) -> str | None:
    """None when ``model``'s classifier is linear on the global average of ``cam_layer`` (the fast path's
    closed-form heat maps are then exact), else why not, in words."""
    import keras

    if not cam_layer or not isinstance(cam_layer, str):
        return "the card names no single heat-map layer (an ensemble or an older card)"
    names = [layer.name for layer in model.layers]
    if HEAD_LAYER not in names or cam_layer not in names:
        return f"the model has no '{HEAD_LAYER}' or no '{cam_layer}' layer"
    head = model.get_layer(HEAD_LAYER)
    if not isinstance(head, keras.layers.Dense) or head.activation.__name__ not in ("softmax", "sigmoid"):
        return "the classifier is not a softmax or sigmoid Dense layer"
    if head.units == 1 and head.activation.__name__ != "sigmoid":
        return "a one-unit classifier without a sigmoid"
    found = producer(head.input)
    while found is not None and isinstance(found[0], keras.layers.Dropout):
        found = producer(found[1][0])
    if found is None or not isinstance(found[0], keras.layers.GlobalAveragePooling2D) \
            or found[0].data_format != "channels_last" or len(found[1]) != 1:
        return "the classifier does not sit on a global average pooling (e.g. a hidden Dense layer or Flatten)"
    pooled = producer(found[1][0])
    if pooled is None or pooled[0].name != cam_layer:
        return f"the global average pooling does not read the heat-map layer '{cam_layer}'"
    return None


def centred_logits(model) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel (D, K), bias (K,))`` of the logits the heat maps explain
    (:func:`medclf_core.explain.views.logits_view`): the head's affine part, a one-unit head as two logits
    ``[-z/2, z/2]``, minus their mean over the classes."""
    head = model.get_layer(HEAD_LAYER)
    kernel = np.asarray(head.kernel, np.float64)
    bias = np.asarray(head.bias, np.float64) if head.use_bias else np.zeros(head.units)
    if head.units == 1:
        kernel, bias = np.concatenate([-kernel / 2, kernel / 2], axis=1), np.concatenate([-bias / 2, bias / 2])
    return kernel - kernel.mean(axis=1, keepdims=True), bias - bias.mean()


def convert(model, cam_layer: str) -> bytes:
    """The ``.tflite`` bytes of ``model`` with two outputs, the ``cam_layer`` activations and the probabilities."""
    import keras
    import tensorflow as tf

    two = keras.Model(model.inputs, [model.get_layer(cam_layer).output, model.outputs[0]])
    shape = model.input_shape[0] if isinstance(model.input_shape, list) else model.input_shape
    spec = tf.TensorSpec([None, *shape[1:]], tf.float32, name="image")
    work = Path(tempfile.mkdtemp(prefix="medclf-lite-"))
    try:
        archive = keras.export.ExportArchive()
        archive.track(two)
        archive.add_endpoint("serve", lambda image: dict(zip(OUTPUTS, two(image, training=False), strict=True)),
                             input_signature=[spec])
        archive.write_out(str(work), verbose=False)
        return bytes(tf.lite.TFLiteConverter.from_saved_model(str(work)).convert())
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types; the caller gets one line
        raise MedclfError(f"The model could not be converted to LiteRT ({brief(exc)}).") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_lite(model, card: dict, folder: str | os.PathLike) -> Path | None:
    """Write ``model.tflite`` and its sidecar into the run ``folder`` (which already holds ``model.keras``);
    the sidecar's path, or None (and a log line) when the model has no fast path. Existing ones are replaced."""
    from medclf_core.explain.geometry import cam_geometry

    folder = Path(folder)
    cam_layer = card.get("cam_layer")
    problem = lite_problem(model, cam_layer)
    if problem is not None:  # said once per model file: `export-lite --stale` (every app start) skips it after
        log.info("No LiteRT fast path for %s: %s.", folder.name, problem)
        remove_lite(folder)
        write_bytes_atomically(folder / LITE_META, json_text(
            {"model_sha256": file_sha256(folder / MODEL_FILE), NO_FAST_PATH: problem}).encode())
        return None
    data = convert(model, cam_layer)
    kernel, bias = centred_logits(model)
    meta = {"model_sha256": file_sha256(folder / MODEL_FILE), "tflite_sha256": hashlib.sha256(data).hexdigest(),
            "cam_layer": cam_layer, "geometry": cam_geometry(model, cam_layer),
            "outputs": list(OUTPUTS), "kernel": kernel.tolist(), "bias": bias.tolist()}
    write_bytes_atomically(folder / LITE_FILE, data)
    write_bytes_atomically(folder / LITE_META, json_text(meta).encode())
    return folder / LITE_META


def recorded_no_fast_path(folder: str | os.PathLike) -> str | None:
    """Why the run's current ``model.keras`` has no fast path, as :func:`write_lite` recorded it in the sidecar;
    None when nothing is recorded, or it was recorded for another model file."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / LITE_META).read_text())
        if isinstance(meta, dict) and meta.get(NO_FAST_PATH) and meta.get("model_sha256") == file_sha256(
                folder / MODEL_FILE):
            return str(meta[NO_FAST_PATH])
    except (OSError, ValueError):
        pass
    return None


def remove_lite(folder: str | os.PathLike) -> None:
    """Remove a run's fast-path files (the sidecar first: a ``.tflite`` alone is never used)."""
    for name in (LITE_META, LITE_FILE):
        (Path(folder) / name).unlink(missing_ok=True)


def export_lite(run: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> str:
    """``medclf export-lite RUN``: (re)write a registered run's fast-path files; what was done, in words
    (the ``.tflite``'s path and size, or why the run has no fast path)."""
    model, card = load_run(run, models_dir)
    if write_lite(model, card, card["run_dir"]) is None:
        return f"no fast path: {recorded_no_fast_path(card['run_dir'])}"
    path = Path(card["run_dir"]) / LITE_FILE
    return f"{path} ({path.stat().st_size / 1e6:.1f} MB)"
