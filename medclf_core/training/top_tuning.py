"""Fine-tuning the top blocks on cached activations: the transfer recipe's ``fine_tune_epochs > 0``.

Image-based fine-tuning (``fitting._fine_tune``) runs every image through the whole frozen trunk at every
step, which is slow on a CPU and overfitted once (issue 23). ``bench/finetune.py`` measured the cheap form
("ft2" in docs/BENCHMARKS.md): every training and validation view goes through the frozen trunk once, up to
the input of the block the architecture names in :attr:`~medclf_core.models.architectures.ArchSpec.cached_fine_tune_from`
(``block14`` of EfficientNet-Lite0: 7x7x192 at 224 px); the probe head is fitted on the pooled features
computed from those activations, then the top blocks, the ``top`` conv and the head train on the cached
tensors. It ranked other-source images better than the probe in every run of the bench. The settings are
the bench's, fixed before it ran: AdamW (weight decay 1e-4), the ``fine_tune_learning_rate`` for the
convolutions (default 2e-4, :data:`~medclf_core.training.config.CACHED_FINE_TUNE_LR`), 1e-3 for the head,
label smoothing 0.1, the recipe's class weights, one random cached view per image per epoch, BatchNorm
frozen (ImageNet statistics), and early stopping on the validation log-loss *after* a temperature fitted on
validation (label smoothing changes the probabilities' scale, so the raw loss would always prefer the
untuned weights); patience 3, the best epoch (>= 1, as in the bench) restored.

The top is a sub-model on the cut tensor that shares the full model's layers, so training it trains the
one flat model (Grad-CAM reads it) and nothing needs copying back.
"""

from __future__ import annotations

import time

import numpy as np

from medclf_core.io.atomic import write_json

HEAD_LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
LABEL_SMOOTHING = 0.1
PATIENCE = 3
BATCH_SIZE = 32
METHOD = "top blocks on cached activations"


def cached_start(s, pretrained: bool) -> str | None:
    """The block cached fine-tuning starts from, or None when this run fine-tunes on images (or not at all):
    it needs a pretrained model, ``fine_tune_epochs > 0``, an architecture that declares the block, one device."""
    if not (pretrained and s.cfg.fine_tune_epochs and s.spec.cached_fine_tune_from) or s.plan.distributed:
        return None
    return s.spec.cached_fine_tune_from


def start_cache(s, model, pretrained: bool):
    """A :class:`CachedActivations` for the run when it fine-tunes on cached activations (:func:`cached_start`),
    else None."""
    start = cached_start(s, pretrained)
    return CachedActivations(model, start, s.spec.feature_layer) if start else None


def cut_input(model, start: str):
    """The tensor entering block ``start`` of ``model``: the input of the first layer named ``<start>_...``."""
    for layer in model.layers:
        if layer.name.startswith(f"{start}_"):
            return layer.input
    raise ValueError(f"Model '{model.name}' has no block '{start}'.")


def trunk_to(model, start: str):
    """``model`` from its input to the activation entering ``start`` (the frozen part), sharing its layers."""
    import keras

    return keras.Model(model.inputs[0], cut_input(model, start), name=f"{model.name}_trunk")


def top_of(model, start: str, feature_layer: str | None = None):
    """``model`` from the activation entering ``start`` to its output (or ``feature_layer``'s), sharing its layers:
    training it trains ``model`` itself."""
    import keras

    out = model.get_layer(feature_layer).output if feature_layer else model.output
    return keras.Model(cut_input(model, start), out, name=f"{model.name}_top")


def run_in_batches(net, x, batch: int = 256) -> np.ndarray:
    """``net`` in inference mode over ``x`` (any float dtype), as float32, a batch at a time."""
    if len(x) == 0:
        return np.zeros((0, *net.output_shape[1:]), np.float32)
    return np.concatenate([np.asarray(net(np.asarray(x[i:i + batch], np.float32), training=False), np.float32)
                           for i in range(0, len(x), batch)])


class CachedActivations:
    """Activations entering ``start`` for every cached training view and the validation images; view 0 (the
    images themselves, which the gate's features come from) and validation stay float32, the other views float16."""

    def __init__(self, model, start: str, feature_layer: str):
        self.model, self.start, self.feature_layer = model, start, feature_layer
        self.trunk = trunk_to(model, start)
        self.train: list[np.ndarray] = []
        self.val: np.ndarray | None = None

    def keep(self, train_acts: np.ndarray, val_acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store the activations; return the pooled features ``(V, N, D)`` and ``(M, D)`` the probe is fitted on."""
        features = top_of(self.model, self.start, self.feature_layer)
        train_f = np.stack([run_in_batches(features, a) for a in train_acts])
        val_f = run_in_batches(features, val_acts)
        self.train = [train_acts[0]] + [a.astype(np.float16) for a in train_acts[1:]]
        self.val = val_acts
        return train_f, val_f

    def train_batch(self, views: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The activations of images ``idx``, each in its ``views`` entry, as float32."""
        out = np.empty((len(idx), *self.train[0].shape[1:]), np.float32)
        for v in np.unique(views):
            rows = views == v
            out[rows] = self.train[v][idx[rows]]
        return out

    def final_train_features(self) -> np.ndarray:
        """The (fine-tuned) model's pooled features of the training images, for the out-of-distribution gate."""
        return run_in_batches(top_of(self.model, self.start, self.feature_layer), self.train[0])


def calibrated_log_loss(y, probs) -> float:
    """Validation log-loss after a temperature fitted on the same images: what early stopping compares."""
    from medclf_core.trust.calibration import apply_temperature, fit_temperature

    return raw_log_loss(y, apply_temperature(probs, fit_temperature(np.asarray(y, dtype=int), probs)))


def raw_log_loss(y, probs) -> float:
    """Plain validation log-loss, probabilities clipped at 1e-7 as Keras' cross-entropy clips them (what the head
    phase's ``val_loss`` is; :func:`medclf_core.trust.calibration.negative_log_likelihood` clips at 1e-12)."""
    y = np.asarray(y, dtype=int)
    return float(-np.mean(np.log(np.clip(np.asarray(probs, np.float64)[np.arange(len(y)), y], 1e-7, 1.0))))


def _trainable(top) -> tuple[list, list]:
    """The top's convolutions and its head: the layers cached fine-tuning trains (BatchNorm stays frozen)."""
    import keras

    conv = [layer for layer in top.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    head = [layer for layer in top.layers if layer.name in ("head_dense", "predictions")]
    return conv, head


def _train_step(top, conv_vars, head_vars, conv_lr: float, class_weight: dict | None, k: int):
    """One traced AdamW step on a batch of cached activations, two learning rates, label smoothing, class weights."""
    import keras
    import tensorflow as tf

    opt_conv = keras.optimizers.AdamW(conv_lr, weight_decay=WEIGHT_DECAY)
    opt_head = keras.optimizers.AdamW(HEAD_LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING)
    cw = tf.constant([(class_weight or {}).get(c, 1.0) for c in range(k)], tf.float32)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            p = top(x, training=True)  # dropout on; frozen BatchNorm layers run in inference mode
            loss = loss_fn(tf.one_hot(y, k), p, sample_weight=tf.gather(cw, y))
        grads = tape.gradient(loss, conv_vars + head_vars)
        opt_conv.apply_gradients(zip(grads[:len(conv_vars)], conv_vars))
        opt_head.apply_gradients(zip(grads[len(conv_vars):], head_vars))
        return loss

    return step


def fine_tune_top(s, m, model, cache: CachedActivations, y_train, y_val, best, *,
                  projected: bool = False) -> tuple[np.ndarray, dict]:
    """Train the top of ``model`` on ``cache`` for at most ``fine_tune_epochs`` epochs, restore the best epoch by
    calibrated validation loss, record it as the run's best weights; return the final model's training features
    (for the gate) and what the card says about the fine-tuning. ``projected``: the probe head has the marks'
    feature directions folded in (training/invariance.py), which fine-tuning does not keep up (not measured
    together): the card says so."""
    import keras

    cfg, log = s.cfg, s.log
    keras.utils.set_random_seed(m.seed)
    top = top_of(model, cache.start)
    flags = {layer.name: layer.trainable for layer in top.layers}
    conv, head = _trainable(top)
    for layer in top.layers:
        layer.trainable = layer in conv or layer in head
    conv_vars = [v for layer in conv for v in layer.trainable_variables]
    head_vars = [v for layer in head for v in layer.trainable_variables]
    step = _train_step(top, conv_vars, head_vars, cfg.fine_tune_learning_rate, s.class_weight,
                       int(model.output_shape[-1]))
    history = _read_history(m.history_path)
    log.emit("phase", phase="fine_tune", epochs=cfg.fine_tune_epochs, learning_rate=cfg.fine_tune_learning_rate,
             method=METHOD, start=cache.start)
    p_val = run_in_batches(top, cache.val)
    start_loss = calibrated_log_loss(y_val, p_val)
    try:
        kept = _epochs(s, m, top, step, cache, np.asarray(y_train), np.asarray(y_val), history,
                       conv_vars + head_vars)
    finally:
        for layer in top.layers:
            layer.trainable = flags[layer.name]
    best.record(model, kept["val_loss_calibrated"], kept["index"])
    info = {"method": METHOD, "from": cache.start, "epochs": kept["epochs_run"], "best_epoch": kept["epoch"],
            "start_val_loss_calibrated": round(start_loss, 6),
            "best_val_loss_calibrated": round(kept["val_loss_calibrated"], 6),
            "conv_learning_rate": cfg.fine_tune_learning_rate, "head_learning_rate": HEAD_LEARNING_RATE,
            "weight_decay": WEIGHT_DECAY, "label_smoothing": LABEL_SMOOTHING, "patience": PATIENCE}
    if projected:
        info["mark_projection"] = "folded into the probe head before fine-tuning; not refitted after it"
    log.emit("notice", message=f"Fine-tuned {cache.start} to the head on cached activations: epoch "
                               f"{kept['epoch']} of {kept['epochs_run']} kept (calibrated validation loss "
                               f"{start_loss:.4f} -> {kept['val_loss_calibrated']:.4f}).")
    return cache.final_train_features(), info


def _read_history(path) -> list[dict]:
    import json

    return json.loads(path.read_text()) if path.is_file() else []


def _epochs(s, m, top, step, cache: CachedActivations, y_train, y_val, history: list, variables) -> dict:
    """The fine-tuning epochs with progress, history, cancel and early stopping; the best epoch's weights
    restored into ``variables``. Returns the kept epoch (1-based within fine-tuning), its history index,
    its calibrated loss and how many epochs ran."""
    import tensorflow as tf

    cfg, log = s.cfg, s.log
    rng = np.random.default_rng(m.seed)
    first, epochs = len(history), len(history) + cfg.fine_tune_epochs
    n, n_views = len(y_train), len(cache.train)
    batches = int(np.ceil(n / BATCH_SIZE))
    best, best_w, kept, wait, times = np.inf, None, None, 0, []
    for e in range(1, cfg.fine_tune_epochs + 1):
        s.check_cancel()
        log.emit("epoch_begin", epoch=first + e, epochs=epochs, phase="fine_tune")
        t0, last, losses = time.time(), 0.0, []
        views, order = rng.integers(0, n_views, n), rng.permutation(n)
        for b, i in enumerate(range(0, n, BATCH_SIZE)):
            idx = order[i:i + BATCH_SIZE]
            losses.append(float(step(tf.constant(cache.train_batch(views[idx], idx)), tf.constant(y_train[idx]))))
            s.check_cancel()
            if time.time() - last >= 0.5 or b + 1 == batches:
                last = time.time()
                log.emit("batch", epoch=first + e, epochs=epochs, batch=b + 1, batches=batches, phase="fine_tune",
                         metrics={"loss": round(float(np.mean(losses)), 6)},
                         eta_s=round((last - t0) / (b + 1) * (batches - b - 1), 1))
        fit_s = time.time() - t0
        p_val = run_in_batches(top, cache.val)
        metrics = {"loss": float(np.mean(losses)), "val_loss": raw_log_loss(y_val, p_val),
                   "val_loss_calibrated": calibrated_log_loss(y_val, p_val),
                   "val_accuracy": float(np.mean(p_val.argmax(1) == y_val))}
        metrics = {k: round(v, 6) for k, v in metrics.items()}
        times.append(time.time() - t0)
        history.append({"epoch": first + e - 1, **metrics, "learning_rate": s.cfg.fine_tune_learning_rate,
                        "seconds": round(times[-1], 2), "phase": "fine_tune", "images_per_s": round(n / fit_s, 1)})
        write_json(m.history_path, history)
        log.emit("epoch", epoch=first + e, epochs=epochs, metrics=metrics, seconds=round(times[-1], 2),
                 eta_s=round((cfg.fine_tune_epochs - e) * float(np.median(times)), 1), phase="fine_tune",
                 images_per_s=round(n / fit_s, 1))
        if kept is None or metrics["val_loss_calibrated"] < best - 1e-4:  # epoch 1 at least, as the bench
            best, best_w, kept, wait = metrics["val_loss_calibrated"], [v.numpy() for v in variables], e, 0
        else:
            wait += 1
            if wait >= PATIENCE:
                break
    for v, w in zip(variables, best_w, strict=True):
        v.assign(w)
    return {"epoch": kept, "index": first + kept - 1, "val_loss_calibrated": best, "epochs_run": e}
