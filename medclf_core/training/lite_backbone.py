"""The transfer recipe's frozen-backbone forward passes on LiteRT, converted once and kept on disk.

:func:`~medclf_core.training.transfer.cache_features` runs every training view and validation image
through the frozen backbone once. On the 2-core benchmark CPU the same EfficientNet-Lite0 extractor runs
faster as a float32 ``.tflite`` on LiteRT's XNNPACK delegate than as a traced TensorFlow call (about
twice the images per second, features within ~2e-5 of TensorFlow's, values up to ~6; docs/BENCHMARKS.md,
session 13). XLA was slower still,
so it is not used. :func:`lite_forward` gives that LiteRT forward, or None and why not (then the caller
runs TensorFlow and logs the reason).

The conversion costs seconds (~9-12 s for Lite0), so the converted extractor is kept in an on-disk cache,
:func:`cache_folder`: ``$MEDCLF_CACHE_DIR/lite_backbones/`` (default ``$XDG_CACHE_HOME/medclf`` or
``~/.cache/medclf``), one ``<key>.tflite`` per extractor, the key a SHA-256 of everything that determines
its output (:func:`extractor_key`: the extractor's Keras config, which names its layers and output, a hash
of its weights, the input shape, TensorFlow/Keras/LiteRT versions). Files are written atomically, each with a
``<key>.sha256`` beside it: a file whose bytes do not match it (altered, or kept without one) is converted
again, as a model file that loads but was changed would give wrong features without a word; the
folder is kept under :data:`MAX_CACHE_BYTES`, the least recently used files removed first (a pretrained
Lite0 extractor is ~13 MB, its trunk up to ``block14`` ~7.5 MB). Deleting the folder is always safe.

``MEDCLF_LITE_FEATURES`` (:data:`LITE_ENV`) chooses: ``0`` TensorFlow always; ``1`` LiteRT whenever it
works (converting on a cache miss whatever the job's size); unset or ``auto``: LiteRT on a cache hit, and
on a miss for a job of at least :data:`MIN_PASSES_TO_CONVERT` forward passes: measured on the chest
bench, the conversion costs ~5 s more than TensorFlow's trace and LiteRT saves ~5 ms per image x view, so
from about 1000 passes the conversion pays for itself within the job, and the transfer recipe's backbone,
always pretrained, comes back with the same key in every later run of the same architecture, image size
and channels (one conversion per machine and backbone). A smaller job on a miss stays on TensorFlow.
A LiteRT interpreter is not thread-safe: each thread gets its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medclf_core.errors import TrainingCancelled
from medclf_core.io.atomic import write_bytes_atomically

LITE_ENV = "MEDCLF_LITE_FEATURES"
CACHE_ENV = "MEDCLF_CACHE_DIR"
CACHE_SUBFOLDER = "lite_backbones"
#: Rows per LiteRT call: a caller's batch runs in chunks of this many, the last one padded with zeros.
LITE_BATCH = 8
#: XNNPACK threads per interpreter (the benchmark CPU has 2 cores).
THREADS = max(1, min(4, os.cpu_count() or 1))
#: Forward passes (images x views) of one job below which a cache miss stays on TensorFlow (``auto``): about
#: where the conversion (~10.5 s against TensorFlow's 5.3 s trace and first batch) is repaid by LiteRT's
#: ~5 ms per pass (7.3 against 12.2 ms, the cache end to end; docs/BENCHMARKS.md, session 13).
MIN_PASSES_TO_CONVERT = 1000
#: The cache folder's bound; the least recently used files go first.
MAX_CACHE_BYTES = 500 * 1024 * 1024
#: Bumped when the way files are made changes, so older files are never read as current.
FORMAT = 1
log = logging.getLogger(__name__)
_LOCAL = threading.local()          # per thread: {key: LiteForward}; interpreters are not thread-safe
_CONVERTING = threading.Lock()      # one conversion at a time in this process; the others then read its file
_FAILED: dict[str, str] = {}        # key -> why its conversion failed in this process (not retried)


def mode() -> str:
    """``"off"``, ``"on"`` or ``"auto"`` from :data:`LITE_ENV`."""
    value = os.environ.get(LITE_ENV, "auto").strip().lower()
    return {"0": "off", "false": "off", "off": "off", "no": "off",
            "1": "on", "true": "on", "on": "on", "yes": "on"}.get(value, "auto")


def cache_folder() -> Path:
    """Where converted extractors are kept: ``$MEDCLF_CACHE_DIR`` (else ``$XDG_CACHE_HOME/medclf``, else
    ``~/.cache/medclf``) ``/lite_backbones``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "medclf")
    return Path(root) / CACHE_SUBFOLDER


def weights_digest(model) -> str:
    """SHA-256 of every weight of ``model`` in order (dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w))
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def extractor_key(extractor, input_shape: tuple[int, ...]) -> str:
    """The cache key of ``extractor`` run on inputs of ``input_shape`` (batch first): a hex SHA-256 of its config
    (layers, their settings, its output layer), its weights' digest, the shape and the library versions."""
    import importlib.metadata

    import keras
    import tensorflow as tf

    try:
        litert = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        litert = "unknown"
    material = {"format": FORMAT, "config": extractor.get_config(), "weights": weights_digest(extractor),
                "input_shape": list(input_shape), "tensorflow": tf.__version__, "keras": keras.__version__,
                "litert": litert}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def convert_extractor(extractor, input_shape: tuple[int, ...]) -> bytes:
    """The float32 ``.tflite`` bytes of ``extractor`` in inference mode on a fixed ``input_shape`` (via a
    SavedModel: converting a traced function directly gave NaN features on this TensorFlow)."""
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    work = tempfile.mkdtemp(prefix="medclf-lite-backbone-")
    try:
        archive = keras.export.ExportArchive()
        archive.track(extractor)
        archive.add_endpoint("serve", lambda image: extractor(image, training=False),
                             input_signature=[tf.TensorSpec(list(input_shape), tf.float32, name="image")])
        archive.write_out(work, verbose=False)
        return bytes(tf.lite.TFLiteConverter.from_saved_model(work).convert())
    finally:
        shutil.rmtree(work, ignore_errors=True)


class LiteForward:
    """``batch -> float32 features`` on one LiteRT interpreter (one thread's): any number of rows, run
    :data:`LITE_BATCH` at a time, the last chunk padded with zeros and its padding rows dropped (inference-mode
    layers treat each row on its own)."""

    def __init__(self, model_content: bytes, interpreter_class):
        self._content = model_content   # the interpreter reads this buffer; it must outlive it
        self.interpreter = interpreter_class(model_content=model_content, num_threads=THREADS)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"])

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        rows = self.input_shape[0]
        out = []
        for start in range(0, len(x), rows):
            chunk = x[start:start + rows]
            n = len(chunk)
            if n < rows:
                chunk = np.concatenate([chunk, np.zeros((rows - n, *chunk.shape[1:]), np.float32)])
            self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(chunk))
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self._output["index"])[:n])
        return np.concatenate(out) if out else np.zeros((0, *self._output["shape"][1:]), np.float32)


def lite_forward(extractor, image_size: int, channels: int, passes: int,
                 cancel: Callable[[], bool] | None = None) -> tuple[LiteForward | None, str | None]:
    """``(forward, None)``: ``extractor`` on LiteRT, from this thread's interpreter, the disk cache or a new
    conversion (written to the cache); ``(None, why)`` when TensorFlow should run it instead: switched off,
    LiteRT missing, a small job on a cache miss (``passes`` < :data:`MIN_PASSES_TO_CONVERT` in ``auto``), or
    a conversion that failed. ``cancel`` is checked before a conversion (which cannot be interrupted)."""
    chosen = mode()
    if chosen == "off":
        return None, f"{LITE_ENV}=0"
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None, "LiteRT (ai-edge-litert) is not installed"
    shape = (LITE_BATCH, int(image_size), int(image_size), int(channels))
    key = extractor_key(extractor, shape)
    mine = _LOCAL.__dict__.setdefault("forwards", {})
    if key in mine:
        return mine[key], None
    if key in _FAILED:
        return None, _FAILED[key]
    path = cache_folder() / f"{key}.tflite"
    forward = _load(path, Interpreter)
    if forward is None:
        if chosen == "auto" and passes < MIN_PASSES_TO_CONVERT:
            return None, (f"a small job ({passes} forward passes, fewer than {MIN_PASSES_TO_CONVERT}) with no "
                          f"converted backbone in {path.parent}: converting would cost more than it saves")
        if cancel is not None and cancel():
            raise TrainingCancelled("Training was cancelled.")
        forward, why = _convert_and_keep(extractor, shape, key, path, Interpreter)
        if forward is None:
            return None, why
    if len(mine) >= 4:
        mine.clear()
    mine[key] = forward
    return forward, None


def checksum_path(path: Path) -> Path:
    """The ``<key>.sha256`` kept beside a converted backbone ``<key>.tflite``: the hex SHA-256 of its bytes."""
    return path.with_suffix(".sha256")


def _load(path: Path, interpreter_class) -> LiteForward | None:
    """The cached file's forward (its use time refreshed), or None when it is missing, does not match its
    checksum or is unreadable (then it is removed)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        kept = checksum_path(path).read_text().strip()
    except OSError:
        kept = None
    if kept != hashlib.sha256(data).hexdigest():
        log.info("Removing a converted backbone %s that does not match its checksum (%s).", path.name,
                 "none kept" if kept is None else "altered")
        _remove(path)
        return None
    try:
        forward = LiteForward(data, interpreter_class)
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        log.info("Removing an unreadable converted backbone %s (%s).", path.name, type(exc).__name__)
        _remove(path)
        return None
    try:
        os.utime(path)
    except OSError:
        pass
    return forward


def _convert_and_keep(extractor, shape, key: str, path: Path, interpreter_class):
    """Convert (one thread at a time; another may have written the file meanwhile), write the file, prune."""
    import time

    with _CONVERTING:
        forward = _load(path, interpreter_class)
        if forward is not None:
            return forward, None
        started = time.perf_counter()
        try:
            data = convert_extractor(extractor, shape)
            forward = LiteForward(data, interpreter_class)
        except Exception as exc:  # noqa: BLE001 - the converter raises many types; TensorFlow runs it instead
            _FAILED[key] = f"the backbone could not be converted to LiteRT ({type(exc).__name__}: {str(exc)[:160]})"
            return None, _FAILED[key]
        log.info("Converted the backbone %s to LiteRT in %.1f s (%.1f MB, kept in %s).", extractor.name,
                 time.perf_counter() - started, len(data) / 1e6, path.parent)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(path, data)  # then its checksum: a file without one is never read
            write_bytes_atomically(checksum_path(path), hashlib.sha256(data).hexdigest().encode())
            prune(path.parent, MAX_CACHE_BYTES, keep=path)
        except OSError as exc:  # a read-only or full disk: this run still uses the converted backbone
            log.info("The converted backbone could not be kept in %s (%s).", path.parent, type(exc).__name__)
        return forward, None


def prune(folder: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used ``.tflite`` files of ``folder`` until the rest fit in ``max_bytes``
    (``keep`` stays, whatever its size); the removed paths."""
    stats = []
    for f in folder.glob("*.tflite"):
        try:
            stats.append((f.stat().st_mtime, f.stat().st_size, f))
        except OSError:  # removed by another process meanwhile
            continue
    total, removed = 0, []
    for _, size, f in sorted(stats, key=lambda t: t[0], reverse=True):
        if f != keep and total + size > max_bytes:
            _remove(f)
            removed.append(f)
        else:
            total += size
    return removed


def _remove(path: Path) -> None:
    """A converted backbone and its checksum."""
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)
