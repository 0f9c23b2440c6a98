"""Fine-tuning against the linear probe (issue 23 item 1), side by side on one split, scored on other sources.

Every shipped model is a Dropout+Dense head on frozen EfficientNet-Lite0 features (the *probe*). The image-based
fine-tuning path re-runs the whole frozen trunk every step, which is slow on a CPU. This bench tries the cheap
alternative first: **top-block fine-tuning on cached activations**. Each image view goes through the frozen trunk
once, up to the input of ``block14`` (7x7x192 at 224 px, stored as float16 under ``--cache``); the trainable top
(``block14``/``block15``, the ``top`` 1x1 conv and the head) then trains on those tensors. Variants, all on the same
training/validation split and the same cached views:

* ``probe``: the shipped recipe's head (``fit_head``: Adam 1e-3, early stopping on validation loss, class weights)
  on the GAP features of every cached view;
* ``logreg``: L2 logistic regression, ``C`` chosen by grouped 5-fold cross-validation on the training split
  (``training/crossfit.py``);
* ``ft1`` / ``ft2``: ``block15`` (+ ``block14``) and ``top`` conv weights trained, BatchNorm frozen (inference
  statistics), head initialised from the probe; AdamW (weight decay 1e-4), 2e-4 for the conv layers, 1e-3 for the
  head, label smoothing 0.1, class weights, one random cached view per image per epoch, at most 12 epochs, early
  stopping on the validation log-loss after a temperature fitted on validation (label smoothing changes the
  probabilities' scale, and the raw log-loss would always prefer the unsmoothed probe); patience 3, the best
  epoch (>= 1) restored.

For every variant the decision threshold (``balanced``, binary) and the temperature are chosen on the validation
split, as the training recipe does; nothing is chosen on the held-out source. Tasks:

* ``brain-navoneel``: train on Br35H, evaluate on the Navoneel files whose group holds no file of another source
  (the 87 of ``bench/brain_sources.py``);
* ``brain-br35h``: train on Navoneel (228), evaluate on the 1080 Br35H files whose group holds no other-source file;
* ``modality``: train on ``../shared/data/modality`` (grouped by case/patient as ``configs/imaging-modality.json``),
  evaluate on 228 Navoneel brain MRIs + the 10 NEMA/pydicom DICOMs (as ``bench/models_report.py --external``).

Each row also gives the same-source validation figures. Intervals: accuracy and AUC by the evaluator's bootstrap
(1000), sensitivity/specificity Wilson 95%; ``dAUC``/``dacc`` vs probe: paired bootstrap (1000) on the same images.

Usage::

    python configs/make_brain_dataset.py --sartaj
    .venv/bin/python bench/finetune.py [--tasks brain-navoneel brain-br35h modality] [--variants probe logreg ft1 ft2]
                                       [--seed 1337] [--cap 0] [--cache /tmp/medclf_finetune_cache] [--json out.json]

Results and their reading: docs/BENCHMARKS.md, "Fine-tuning against the linear probe (issue 23 item 1)".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from brain_sources import catalogue, wilson  # noqa: E402

CUT = "block13_add"            # its output is block14's input: 7x7x192 at 224 px
BLOCK_PARTS = ("expand_conv", "expand_bn", "expand_relu", "dw_conv", "dw_bn", "dw_relu", "project_conv", "project_bn")
VIEWS = ("original", "hflip", "augment1")


def apply_blocks(model, x, blocks):
    """``model``'s own layers of ``blocks`` (e.g. 14, 15) applied to ``x``, the residual add included."""
    for b in blocks:
        shortcut = x
        for part in BLOCK_PARTS:
            x = model.get_layer(f"block{b}_{part}")(x)
        names = {layer.name for layer in model.layers}
        if f"block{b}_add" in names:
            x = model.get_layer(f"block{b}_add")([x, shortcut])
    return x


def apply_top(model, x, head: bool = True):
    """``top`` conv/bn/relu, ``gap`` and (``head``) the dropout and ``predictions`` of ``model``."""
    for name in ("top_conv", "top_bn", "top_relu", "gap"):
        x = model.get_layer(name)(x)
    if head:
        names = {layer.name for layer in model.layers}
        if "head_dropout" in names:
            x = model.get_layer("head_dropout")(x)
        x = model.get_layer("predictions")(x)
    return x


def sub_model(model, shape, blocks, *, head: bool, top: bool = True):
    import keras

    inp = keras.Input(shape)
    x = apply_blocks(model, inp, blocks)
    return keras.Model(inp, apply_top(model, x, head) if top else x)


def new_model(num_classes: int):
    from medclf_core.models.architectures import build_model

    return build_model("efficientnet_lite0", num_classes, 224, 1)


def cached_activations(paths, augment, cache: Path, seed: int = 1337) -> np.ndarray:
    """``(V, N, 7, 7, 192)`` float16: block14's input for every view of every path, cached on disk."""
    import keras

    from medclf_core.training.transfer import cache_features

    if cache.is_file():
        return np.load(cache)["a"]
    model = new_model(2)
    cut = keras.Model(model.inputs, model.get_layer(CUT).output)
    t0 = time.perf_counter()
    a = cache_features(cut, paths, image_size=224, channels=1, batch_size=32, views=VIEWS, augment=augment, seed=seed)
    a = a.astype(np.float16)
    print(f"cached {a.shape} in {time.perf_counter() - t0:.0f} s -> {cache}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, a=a)
    return a


def predict(m, x, batch: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(m(x[i:i + batch].astype(np.float32), training=False))
                           for i in range(0, len(x), batch)])


def grouped_split(labels, groups, seed: int = 1337, val: float = 0.2):
    from medclf_core.data.split import stratified_group_split

    keys = {}
    for i, g in enumerate(groups):
        keys.setdefault(g, []).append(i)
    parts = stratified_group_split(list(labels), list(keys.values()), {"train": 1 - val, "val": val}, seed)
    return np.array(parts["train"]), np.array(parts["val"]), list(keys.values())


def finish(name, y_val, p_val, y_test, p_test, class_names, seconds, extra=None) -> dict:
    """Threshold and temperature chosen on validation, then figures on validation and on the other source."""
    from medclf_core.trust.calibration import apply_temperature, fit_temperature
    from medclf_core.trust.metrics import choose_threshold, evaluate_probabilities

    binary = len(class_names) == 2
    t = fit_temperature(y_val, p_val)
    pv, pt = apply_temperature(p_val, t), apply_temperature(p_test, t)
    thr = choose_threshold(y_val, pv, 1, "balanced") if binary else None
    val = evaluate_probabilities(y_val, pv, class_names, threshold=thr, positive=1 if binary else None, bootstrap=0)
    test = evaluate_probabilities(y_test, pt, class_names, threshold=thr, positive=1 if binary else None)
    return {"variant": name, "seconds": round(seconds, 1), "temperature": t, "threshold": thr, **(extra or {}),
            "val": {k: val.get(k) for k in ("n", "accuracy", "auc", "sensitivity", "specificity", "ece")},
            "test": test, "p_test": pt}


def fine_tune(model, a_tr, y_tr, a_val, y_val, blocks, class_weight, *, epochs=12, patience=3, lr=2e-4,
              head_lr=1e-3, wd=1e-4, smoothing=0.1, batch=32, seed=1337):
    """Train ``blocks`` + ``top`` conv + head of ``model`` on cached block inputs; BatchNorm frozen. Returns info."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    k = int(model.output_shape[-1])
    net = sub_model(model, a_tr.shape[2:], blocks, head=True)
    conv = [model.get_layer(f"block{b}_{p}") for b in blocks for p in ("expand_conv", "dw_conv", "project_conv")]
    conv.append(model.get_layer("top_conv"))
    for layer in net.layers:
        layer.trainable = False
    for layer in conv:
        layer.trainable = True
    head = model.get_layer("predictions")
    head.trainable = True
    body_vars = [v for layer in conv for v in layer.trainable_variables]
    head_vars = list(head.trainable_variables)
    opt_b = keras.optimizers.AdamW(lr, weight_decay=wd)
    opt_h = keras.optimizers.AdamW(head_lr, weight_decay=wd)
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    cw = np.array([class_weight.get(c, 1.0) for c in range(k)], np.float32) if class_weight else np.ones(k, np.float32)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            p = net(x, training=True)
            loss = loss_fn(tf.one_hot(y, k), p, sample_weight=tf.gather(cw, y))
        g = tape.gradient(loss, body_vars + head_vars)
        opt_b.apply_gradients(zip(g[:len(body_vars)], body_vars))
        opt_h.apply_gradients(zip(g[len(body_vars):], head_vars))
        return loss

    def val_loss():  # after a temperature fitted on validation: label smoothing changes the scale, not the ranking
        from medclf_core.trust.calibration import apply_temperature, fit_temperature

        p = predict(net, a_val)
        p = apply_temperature(p, fit_temperature(y_val, p))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-7, 1))))

    rng = np.random.default_rng(seed)
    start = val_loss()
    best, best_w, best_epoch, wait, hist = np.inf, None, 0, 0, []
    for epoch in range(1, epochs + 1):
        view = rng.integers(0, a_tr.shape[0], len(y_tr))
        order = rng.permutation(len(y_tr))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            step(tf.constant(a_tr[view[idx], idx].astype(np.float32)), tf.constant(y_tr[idx]))
        vl = val_loss()
        hist.append(round(vl, 4))
        if vl < best - 1e-4:
            best, best_w, best_epoch, wait = vl, [v.numpy() for v in body_vars + head_vars], epoch, 0
        else:
            wait += 1
            if wait >= patience:
                break
    for v, w in zip(body_vars + head_vars, best_w):
        v.assign(w)
    return net, {"best_epoch": best_epoch, "val_loss_by_epoch": hist, "start_val_loss": round(start, 4)}


def run_task(task, acts_tr, y_tr_all, groups, acts_test, y_test, class_names, variants, seed=1337) -> list[dict]:
    """Every variant on one split of the training images, scored on the validation split and the other source."""
    import keras

    from medclf_core.training.crossfit import cross_fit
    from medclf_core.training.labels import class_weight_for
    from medclf_core.training.transfer import copy_head, fit_head

    k = len(class_names)
    tr, va, _ = grouped_split(y_tr_all, groups, 1337)  # one split whatever the training seed
    y_tr, y_val = y_tr_all[tr], y_tr_all[va]
    cw = class_weight_for(list(y_tr), k, "auto")
    base = new_model(k)
    gapf = sub_model(base, acts_tr.shape[2:], (14, 15), head=False)
    feats = np.stack([predict(gapf, acts_tr[v]) for v in range(acts_tr.shape[0])])
    f_test = predict(gapf, acts_test[0])
    rows = []
    t0 = time.perf_counter()
    head = fit_head(feats[:, tr].reshape(-1, feats.shape[2]), np.tile(y_tr, feats.shape[0]), feats[0, va], y_val,
                    num_classes=k, epochs=100, learning_rate=1e-3, dropout=0.2, class_weight=cw, patience=10, seed=seed)
    probe_s = time.perf_counter() - t0
    if "probe" in variants:
        rows.append(finish("probe", y_val, predict(head, feats[0, va]), y_test, predict(head, f_test), class_names,
                           probe_s, {"best_epoch": head.best_epoch}))
    if "logreg" in variants:
        t0 = time.perf_counter()
        sub_groups = {}
        for j, i in enumerate(tr):
            sub_groups.setdefault(groups[i], []).append(j)
        cf = cross_fit(feats[:, tr], y_tr, list(sub_groups.values()), num_classes=k, class_weight=cw, seed=seed)
        soft = lambda f: keras.ops.convert_to_numpy(keras.ops.softmax(f @ cf.kernel + cf.bias))  # noqa: E731
        rows.append(finish("logreg", y_val, soft(feats[0, va]), y_test, soft(f_test), class_names,
                           time.perf_counter() - t0, {"C": cf.C}))
    for n_blocks in (1, 2):
        if f"ft{n_blocks}" not in variants:
            continue
        t0 = time.perf_counter()
        model = new_model(k)
        copy_head(head, model)
        blocks = (15,) if n_blocks == 1 else (14, 15)
        a_tr, a_va, a_te = acts_tr[:, tr], acts_tr[0, va], acts_test[0]
        if n_blocks == 1:  # block14 stays frozen: run it once on the cached inputs
            b14 = sub_model(model, acts_tr.shape[2:], (14,), head=False, top=False)
            a_tr = np.stack([predict(b14, a_tr[v]).astype(np.float16) for v in range(a_tr.shape[0])])
            a_va, a_te = predict(b14, a_va), predict(b14, a_te)
        net, info = fine_tune(model, a_tr, y_tr, a_va, y_val, blocks, cw, seed=seed)
        rows.append(finish(f"ft{n_blocks}", y_val, predict(net, a_va), y_test, predict(net, a_te), class_names,
                           time.perf_counter() - t0, info))
        print(task, rows[-1]["variant"], json.dumps({k2: v for k2, v in rows[-1].items() if k2 not in ("test", "p_test")}),
              flush=True)
    for r in rows:
        r["task"], r["n_train"], r["n_val"], r["seed"] = task, int(len(tr)), int(len(va)), seed
    paired(rows, y_test, class_names)
    return rows


def paired(rows, y, class_names, n_boot: int = 1000, seed: int = 0) -> None:
    """Paired bootstrap 95% intervals of (variant - probe) for AUC (binary) and accuracy, on the same images."""
    from medclf_core.trust.metrics import _auc, decide

    probe = next((r for r in rows if r["variant"] == "probe"), None)
    if probe is None:
        return
    k, pos = len(class_names), (1 if len(class_names) == 2 else None)
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]
    ok = {r["variant"]: decide(r["p_test"], r["threshold"], pos) == y for r in rows}
    for r in rows:
        if r is probe:
            continue
        da = [ok[r["variant"]][b].mean() - ok["probe"][b].mean() for b in boots]
        r["dacc"] = [float(ok[r["variant"]].mean() - ok["probe"].mean()), *np.percentile(da, [2.5, 97.5]).tolist()]
        if pos is not None:
            d = []
            for b in boots:
                if len(np.unique(y[b])) == 2:
                    d.append(_auc(y[b], r["p_test"][b], k, pos) - _auc(y[b], probe["p_test"][b], k, pos))
            r["dauc"] = [float(r["test"]["auc"] - probe["test"]["auc"]), *np.percentile(d, [2.5, 97.5]).tolist()]


def brain_task(held: str, data: Path, cache: Path, cap: int):
    """Training and other-source images of one brain fold, with their cached activations."""
    from medclf_core.data.augment import AugmentConfig

    files = catalogue(data)
    touched = {f["group"] for f in files if f["source"] != held}
    test = [f for f in files if f["source"] == held and f["group"] not in touched]
    train = [f for f in files if f["source"] == ("br35h" if held == "navoneel" else "navoneel")]
    if cap and len(train) > cap:
        keep = set(np.random.default_rng(0).permutation(len(train))[:cap].tolist())
        train = [f for i, f in enumerate(train) if i in keep]
    aug = AugmentConfig.preset("brain_mri")
    every = sorted({str(f["path"]) for f in files if f["source"] in ("navoneel", "br35h")})
    acts = cached_activations(every, aug, cache / "brain_nav_br35h.npz")
    where = {p: i for i, p in enumerate(every)}
    y = lambda fs: np.array([int(f["label"] == "yes") for f in fs])  # noqa: E731
    a_tr = acts[:, [where[str(f["path"])] for f in train]]
    a_te = acts[:1, [where[str(f["path"])] for f in test]]
    return a_tr, y(train), [f["group"] for f in train], a_te, y(test), ["no", "yes"]


def modality_task(shared: Path, cache: Path, cap: int):
    """The modality training folder (grouped as its config) and the other-source images of models_report --external."""
    from medclf_core.data.augment import AugmentConfig

    cfg = json.loads((REPO / "configs" / "imaging-modality.json").read_text())
    names = ["CT", "MRI", "XRAY"]
    train = [(str(f), c) for c in names for f in sorted((shared / "modality" / c).iterdir()) if f.is_file()]
    if cap and len(train) > cap:
        keep = set(np.random.default_rng(0).permutation(len(train))[:cap].tolist())
        train = [t for i, t in enumerate(train) if i in keep]
    groups = []
    for p, _ in train:
        m = re.search(cfg["group_pattern"], Path(p).name)
        groups.append(m.group(1) if m else p)
    test = [*[(str(f), "MRI") for f in sorted((shared / "brain_tumor_mri").glob("*/*"))],
            *[(str(f), "MRI") for f in sorted((shared / "dicom_samples" / "MR").glob("*"))],
            *[(str(f), "CT") for f in sorted((shared / "dicom_samples" / "CT").glob("*"))],
            *[(str(f), "XRAY") for f in sorted((shared / "dicom_samples" / "CR").glob("*"))]]
    aug = AugmentConfig.from_dict(cfg["augment"])
    a_tr = cached_activations([p for p, _ in train], aug, cache / f"modality_train_{cap or 'all'}.npz")
    a_te = cached_activations([p for p, _ in test], aug, cache / "modality_external.npz")[:1]
    y = lambda ts: np.array([names.index(c) for _, c in ts])  # noqa: E731
    return a_tr, y(train), groups, a_te, y(test), names


def fmt(v, ci=None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def table(rows) -> str:
    out = ["| task (other source: n) | variant | same-source val acc / AUC (n) | other-source accuracy | sensitivity | "
           "specificity | AUC | ECE | dAUC vs probe | dacc vs probe | s |", "|" + "---|" * 11]
    for r in rows:
        t, ci, v = r["test"], r["test"].get("ci95") or {}, r["val"]
        n_cls = [int(sum(row)) for row in t["confusion_matrix"]]
        sens = spec = "-"
        if t.get("sensitivity") is not None:
            sens = fmt(t["sensitivity"], wilson(round(t["sensitivity"] * n_cls[1]), n_cls[1]))
            spec = fmt(t["specificity"], wilson(round(t["specificity"] * n_cls[0]), n_cls[0]))
        d = lambda key: "-" if key not in r else f"{r[key][0]:+.3f} ({r[key][1]:+.3f} to {r[key][2]:+.3f})"  # noqa: E731
        out.append(f"| {r['task']} ({t['n']}: {'/'.join(map(str, n_cls))}) | {r['variant']} | {fmt(v['accuracy'])} / "
                   f"{fmt(v['auc'])} ({v['n']}) | {fmt(t['accuracy'], ci.get('accuracy'))} | {sens} | {spec} | "
                   f"{fmt(t['auc'], ci.get('auc'))} | {fmt(t['ece'])} | {d('dauc')} | {d('dacc')} | {r['seconds']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "build" / "brain_mri_three_sources")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--tasks", nargs="+", default=["brain-navoneel", "brain-br35h", "modality"],
                    choices=["brain-navoneel", "brain-br35h", "modality"])
    ap.add_argument("--variants", nargs="+", default=["probe", "logreg", "ft1", "ft2"])
    ap.add_argument("--cap", type=int, default=0, help="at most this many training images per task (seeded draw)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medclf_finetune_cache"))
    ap.add_argument("--seed", type=int, default=1337, help="training seed (heads, fine-tuning); the split stays seed 1337")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    for task in a.tasks:
        t0 = time.perf_counter()
        if task.startswith("brain"):
            if not a.data.is_dir():
                raise SystemExit("Run python configs/make_brain_dataset.py --sartaj first.")
            parts = brain_task(task.split("-")[1], a.data, a.cache, a.cap)
        else:
            parts = modality_task(a.shared, a.cache, a.cap)
        rows += run_task(task, *parts, variants=a.variants, seed=a.seed)
        print(f"{task}: {time.perf_counter() - t0:.0f} s", flush=True)
        print(table([r for r in rows if r["task"] == task]), flush=True)
    if a.json:
        a.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "p_test"} for r in rows], indent=1,
                                     default=float))
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
