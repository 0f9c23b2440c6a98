"""The transfer recipe: a classifier head on cached features of a frozen pretrained backbone.

Fitting a head on a frozen backbone by ``model.fit`` over images runs every image
through the whole backbone in every epoch, which is what makes transfer learning
slow on a CPU. Here each image (and each of a few augmented *views* of it) goes
through the backbone once; the head (Dropout + Dense, the same layers as the
model's own) then trains for many epochs on the cached feature vectors in
milliseconds, and its weights are copied into the model's head. The backbone pass runs on LiteRT where it
can (:mod:`~medclf_core.training.lite_backbone`, converted once and kept on disk). Optional
fine-tuning of the top blocks then runs on images, in :mod:`medclf_core.training`.

Example::

    >>> import numpy as np
    >>> feats = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
    >>> labels = (feats[:, 0] > 0).astype(int)
    >>> head = fit_head(feats, labels, feats, labels, num_classes=2, epochs=50, learning_rate=0.1, seed=0)
    >>> float(head.evaluate(feats, labels, verbose=0)[1]) > 0.8
    True
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing

import numpy as np

from medclf_core.data.augment import AugmentConfig, build_augmenter
from medclf_core.errors import TrainingCancelled
from medclf_core.data.pipeline import make_dataset
from medclf_core.models.head import classifier_head

HEAD_LAYERS = ("head_dense", "predictions")
#: Views :func:`cache_features` augments ahead of the backbone (:func:`run_ahead`): a 32-image batch of
#: 224 px views is ~6 MB per channel.
VIEWS_AHEAD = 2
log = logging.getLogger(__name__)


def feature_extractor(model, feature_layer: str):
    """The model up to ``feature_layer`` (pooled features), sharing its layers and weights."""
    import keras

    return keras.Model(model.inputs, model.get_layer(feature_layer).output, name=f"{model.name}_features")


def view_names(n_augmented: int, horizontal_flip: bool) -> list[str]:
    """The training views that get cached: the image itself, its mirror if flips are allowed, random augmentations."""
    return ["original", *(["hflip"] if horizontal_flip else []), *[f"augment{k + 1}" for k in range(n_augmented)]]


def cache_features(extractor, paths: Sequence[str], *, image_size: int, channels: int, batch_size: int,
                   views: Sequence[str] = ("original",), augment: AugmentConfig | None = None, seed: int = 1337,
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Features ``(len(views), N, D)``: every image decoded once, each view through the backbone once, on
    LiteRT where it works (:func:`backbone_forward`), else in one traced call per batch shape shared by every
    call on ``extractor`` (:func:`traced_forward`).

    Views: ``original``, ``hflip`` (mirror), ``augmentK`` (a random transform of the
    dataset's augmentation config, seeded by ``seed + K``). ``progress(done, total)``
    counts batches x views; ``cancel()`` is checked after each. The views of the last, partial batch go
    through the backbone together (:func:`_packed`): 300 images in batches of 32 with 3 views are 29 backbone
    calls, not 30 with 20 padding rows in each of 3. Decoding and augmentation run on a background thread a
    view or two ahead of the backbone (:func:`run_ahead`), in the same order, so with the same draws.
    """
    ds = make_dataset(list(paths), np.zeros(len(paths), dtype=np.int32), image_size=image_size, channels=channels,
                      batch_size=batch_size, training=False, cache=False)
    augmenters = {}
    for k, view in enumerate(views):
        if view.startswith("augment"):
            if augment is None or not augment.enabled:
                raise ValueError(f"View '{view}' needs an augmentation config that does something.")
            augmenters[view] = traced_augmenter(augment, seed + k, slot=k)
    steps = int(np.ceil(len(paths) / batch_size)) * len(views)
    out: dict[str, list[np.ndarray]] = {v: [] for v in views}
    done = 0
    predict = backbone_forward(extractor, batch_size, image_size, channels, len(paths) * len(views), cancel)
    with closing(run_ahead(_view_batches(ds, views, augmenters, batch_size), VIEWS_AHEAD)) as ready:
        for names, batches, packed in ready:
            feats = _packed(predict, batches, batch_size) if packed else [predict(batches[0])]
            for view, f in zip(names, feats):
                out[view].append(f)
                done += 1
                if cancel is not None and cancel():
                    raise TrainingCancelled("Training was cancelled.")
                if progress:
                    progress(done, steps)
    return np.stack([np.concatenate(out[v]) if out[v] else np.zeros((0, 0), np.float32) for v in views])


def _view_batches(ds, views: Sequence[str], augmenters: dict, batch_size: int) -> Iterator[tuple]:
    """``(view names, their batches, packed?)`` in the order :func:`cache_features` feeds the backbone: each view
    of a full batch on its own, the views of the last, partial batch together (to go through :func:`_packed`).
    Decoding and augmenting happen here, in this order, whichever thread runs it: the seeded draws follow it."""
    for x, _ in ds:
        if int(x.shape[0]) < batch_size:
            yield list(views), [_view(x, v, augmenters) for v in views], True
        else:
            for view in views:
                yield [view], [_view(x, view, augmenters)], False


def run_ahead(items: Iterable, depth: int) -> Iterator:
    """The items of ``items`` in order, each computed on one background thread up to ``depth`` items before the
    caller asks for it; ``close()`` it (``contextlib.closing``) to stop that thread.

    Why: :func:`cache_features` ran decoding and augmentation (TensorFlow ops, the eraser's OpenCV), then the
    backbone (LiteRT's XNNPACK threads), one after the other; each left a core of the benchmark's two idle
    part of the time (docs/BENCHMARKS.md, session 14). Run ahead, the next view is being augmented while the
    backbone runs on this one. One thread computes every item, in the order of ``items``, so seeded random draws
    are those of the plain loop. An exception raised while computing an item is raised in the caller when it
    reaches that item; closing the generator early (cancellation, the caller's error) stops the thread after
    the item it is computing."""
    pending: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop, end = threading.Event(), object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                pending.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which raises it
            put((end, exc))

    worker = threading.Thread(target=produce, name="medclf-run-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = pending.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _packed(predict, batches: list, batch_size: int) -> list[np.ndarray]:
    """``predict`` on each of a few partial batches, run as their rows stacked and cut into full batches (only the
    last padded): inference-mode layers treat each row on its own, so each row's features are those of its own
    call."""
    import tensorflow as tf

    rows = tf.concat(batches, axis=0)
    feats = np.concatenate([predict(rows[i:i + batch_size]) for i in range(0, int(rows.shape[0]), batch_size)])
    return np.split(feats, np.cumsum([int(b.shape[0]) for b in batches])[:-1])


def _view(x, view: str, augmenters: dict):
    """One view of a decoded batch: itself, its mirror, or a seeded random augmentation clipped to 0..255."""
    import tensorflow as tf

    if view == "original":
        return x
    if view == "hflip":
        return tf.reverse(x, axis=[2])
    return tf.clip_by_value(augmenters[view](x), 0.0, 255.0)


def traced_augmenter(augment: AugmentConfig, seed: int, slot: int = 0):
    """:func:`~medclf_core.data.augment.build_augmenter` as one ``tf.function``: the same seeded draws as running
    its layers eagerly, in half the time (the layers' random state advances in the traced graph as it would).

    Traced once per config and ``slot`` (a view's place among the views of one call) in each thread, for
    any batch size: a later call reseeds the same layers (:meth:`~medclf_core.data.augment.Augmenter.reseed`)
    instead of tracing new ones, which cost about 0.5 s per trace and per batch shape (the last, partial
    batch), twice per augmented view and call before. The function returned draws from ``seed`` until the next
    call with the same config and slot in the same thread."""
    import tensorflow as tf

    cache = _AUGMENTERS.__dict__.setdefault("by_config", {})
    key = (tuple(sorted(augment.to_dict().items())), slot)
    if key not in cache:
        if len(cache) >= 32:
            cache.clear()
        augmenter = build_augmenter(augment, seed)
        spec = tf.TensorSpec((None, None, None, None), tf.float32)
        cache[key] = (augmenter, tf.function(augmenter, input_signature=[spec]))
    augmenter, traced = cache[key]
    augmenter.reseed(seed)
    return traced


def backbone_forward(extractor, batch_size: int, image_size: int, channels: int, passes: int,
                     cancel: Callable[[], bool] | None = None) -> Callable:
    """``batch -> float32 features`` of the frozen ``extractor`` for a job of ``passes`` images x views: on
    LiteRT when :func:`~medclf_core.training.lite_backbone.lite_forward` gives it (features within ~1e-5 of
    TensorFlow's, faster on a CPU), else :func:`traced_forward`, with one log line saying why."""
    from medclf_core.training.lite_backbone import lite_forward

    lite, why = lite_forward(extractor, image_size, channels, passes, cancel)
    if lite is not None:
        return lite
    log.info("Backbone features on TensorFlow: %s.", why)
    return traced_forward(extractor, batch_size, image_size, channels)


_AUGMENTERS = threading.local()
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def traced_forward(extractor, batch_size: int, image_size: int, channels: int) -> Callable:
    """``batch -> float32 features``: one ``tf.function`` per extractor and batch shape, traced once and reused by
    every :func:`cache_features` call on that extractor (a trace of the backbone costs seconds on a CPU). A last,
    partial batch is padded with zeros to the fixed shape and its padding rows dropped, so it does not trace
    again; inference-mode layers treat every row on its own, so the real rows' features are those of an
    unpadded call."""
    import tensorflow as tf

    per_shape = _TRACED.setdefault(extractor, {})
    shape = (batch_size, image_size, image_size, channels)
    if shape not in per_shape:
        held = weakref.ref(extractor)  # not the extractor itself: the cache entry must not keep its key alive

        def backbone_forward(x):
            return held()(x, training=False)

        per_shape[shape] = tf.function(backbone_forward, input_signature=[tf.TensorSpec(shape, tf.float32)])
    forward = per_shape[shape]

    def features(x) -> np.ndarray:
        n = int(x.shape[0])
        if n < batch_size:
            x = tf.pad(x, [[0, batch_size - n], [0, 0], [0, 0], [0, 0]])
        return np.asarray(forward(x), dtype=np.float32)[:n]

    return features


def build_head(feature_dim: int, num_classes: int, *, dense_units: int = 0, dropout: float = 0.2):
    """The model's own head layers (same names, so weights copy across) on a feature-vector input."""
    import keras

    inputs = keras.Input((feature_dim,), name="features")
    return keras.Model(inputs, classifier_head(inputs, num_classes, dense_units, dropout), name="head")


def fit_head(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
             val_labels: np.ndarray, *, num_classes: int, epochs: int = 60, learning_rate: float = 1e-3,
             batch_size: int = 64, dense_units: int = 0, dropout: float = 0.2, class_weight: dict | None = None,
             patience: int = 8, seed: int = 1337, callbacks: Sequence = ()):
    """Train the head on cached features; early stopping on validation loss restores the best epoch."""
    import keras

    keras.utils.set_random_seed(seed)
    head = build_head(train_features.shape[1], num_classes, dense_units=dense_units, dropout=dropout)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    head.fit(train_features, np.asarray(train_labels), validation_data=(val_features, np.asarray(val_labels)),
             epochs=epochs, batch_size=batch_size, class_weight=class_weight, shuffle=True, verbose=0,
             callbacks=[*callbacks, stop])
    head.best_epoch = int(stop.best_epoch) + 1 if stop.best_weights is not None else len(head.history.epoch)
    head.best_val_loss = float(stop.best) if np.isfinite(stop.best) else None
    return head


def head_options(model) -> dict:
    """``dense_units`` and ``dropout`` of ``model``'s own head, so :func:`build_head` rebuilds it exactly."""
    names = {layer.name: layer for layer in model.layers}
    return {"dense_units": names["head_dense"].units if "head_dense" in names else 0,
            "dropout": names["head_dropout"].rate if "head_dropout" in names else 0.0}


def copy_head(head, model) -> None:
    """Copy the trained head's weights into the full model's head layers (by name)."""
    for name in HEAD_LAYERS:
        try:
            src = head.get_layer(name)
        except ValueError:
            continue
        model.get_layer(name).set_weights(src.get_weights())
