"""A model over a whole dataset folder or zip: :func:`predict_folder` (every image's probabilities)
and :func:`evaluate_folder` (metrics with intervals and the out-of-distribution block).

:func:`evaluate_predictions` computes the same metrics from predictions already made (e.g. those
stored with a run), so a folder, an upload and the model's own test split give one result block.

Example (``predictor`` from :meth:`Predictor.from_run <medclf_core.inference.predictor.Predictor.from_run>`)::

    >>> r = evaluate_folder(predictor, "samples/datasets/chest_xray", bootstrap=0)   # doctest: +SKIP
    >>> r["n"], r["split"], r["ood"]["checked"]                                        # doctest: +SKIP
    (80, 'all', True)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from medclf_core.data.audit import pixel_digest
from medclf_core.data.fingerprint import dataset_fingerprint, evaluated_split
from medclf_core.data.scan import scan_dataset
from medclf_core.data.split import group_key, unmatched_note
from medclf_core.errors import DatasetError, ImageError
from medclf_core.inference.overlap import training_overlap
from medclf_core.io.images import load_image
from medclf_core.trust.pixel_facts import pixel_facts
from medclf_core.trust.metrics import decide, evaluate_probabilities
from medclf_core.trust.selective import selective_prediction
from medclf_core.trust.sites import site_overlap_message
from medclf_core.trust.verdict import ood_block


def predict_folder(predictor, data: str | os.PathLike, split: str = "auto", *, progress=None) -> dict:
    """Probabilities for every image of a dataset folder or zip laid out as for training.

    ``split``: ``auto`` uses the ``test`` folder of a pre-split dataset, else every
    image (:func:`medclf_core.data.fingerprint.evaluated_split`); ``all``, ``train``, ``val`` or ``test`` choose explicitly. Dataset class
    folders are matched to the model's classes by name (case-insensitive); a
    dataset may hold a subset of them. Unreadable files are skipped and listed.
    ``progress(done, total)`` is called after each image is read.
    Returns ``{"files" (absolute paths), "rel", "y_true" (N,), "probs" (N, K), "skipped",
    "split", "class_names", "dataset", "ood" (N flags: True/False/None = not checked),
    "ood_score" (N, None without a gate), "ood_reason" (N), "unfamiliar" (N: True/False/None), "unfamiliar_reason"
    (N), "unfamiliar_score" (N), "hashes" ({rel: pixel digest})}``: what a threshold slider or a
    metrics report needs. ``probs`` are calibrated like every Predictor output.
    """
    index, items, split, label_of = _items(predictor, data, split)
    arrays, headers, out = [], [], {"files": [], "rel": [], "labels": [], "skipped": [], "hashes": {}}
    pixels = []
    for n, (item, (arr, err, facts, digest, seen)) in enumerate(zip(items, _read(predictor, items), strict=True), 1):
        if err:
            out["skipped"].append({"file": item.rel, "error": err})
        else:
            arrays.append(arr)
            headers.append(facts)
            pixels.append(seen)
            out["hashes"][item.rel] = digest
            out["labels"].append(label_of[index.class_names[item.label].lower()])
            out["files"].append(item.path)
            out["rel"].append(item.rel)
        if progress:
            progress(n, len(items))
    if not arrays:
        raise DatasetError("None of the images could be read.")
    prepared = np.stack(arrays)
    probs, feats = predictor.predict_batch_with_features(prepared)
    verdicts = predictor.verdicts(feats, headers, len(arrays), prepared, pixels)
    return {"files": out["files"], "rel": out["rel"], "y_true": np.asarray(out["labels"], dtype=int),
            "probs": probs, "skipped": out["skipped"], "split": split,
            "class_names": list(predictor.class_names), "dataset": str(data),
            "ood": [v["ood"] for v in verdicts], "ood_score": [v["ood_score"] for v in verdicts],
            "ood_reason": [v["ood_reason"] for v in verdicts], "unfamiliar": [v["unfamiliar"] for v in verdicts],
            "unfamiliar_reason": [v["unfamiliar_reason"] for v in verdicts],
            "unfamiliar_score": [v["unfamiliar_score"] for v in verdicts], "hashes": out["hashes"]}


def _items(predictor, data, split: str):
    """``(index, items of the split, the split resolved, {class name lower: model class index})``;
    :class:`DatasetError` for a class the model does not know or an empty split."""
    index = scan_dataset(data)
    label_of = {c.lower(): i for i, c in enumerate(predictor.class_names)}
    unknown = [c for c in index.class_names if c.lower() not in label_of]
    if unknown:
        raise DatasetError(f"The dataset has class folder(s) {', '.join(unknown)} that the model does not know "
                           f"(model classes: {', '.join(predictor.class_names)}).")
    split = evaluated_split(index, split)
    items = [it for it in index.items if split == "all" or it.split == split]
    if not items:
        raise DatasetError(f"No images in split '{split}' of {data}.")
    return index, items, split, label_of


def _read(predictor, items):
    """``(prepared input or None, error or None, DICOM facts or None, pixel digest or None, the original pixels'
    facts (:func:`~medclf_core.trust.pixel_facts.pixel_facts`) or None)`` per item, in
    order, read by four threads (decoding is most of an evaluation's time; the digest, for
    :func:`~medclf_core.inference.overlap.training_overlap`, is a few ms)."""
    def prepare(item):
        try:
            img = load_image(item.path)
            return (predictor.prepare(img.pixels), None, predictor.dicom_facts(img), pixel_digest(img.pixels),
                    pixel_facts(img.pixels))
        except ImageError as exc:
            return None, str(exc), None, None, None
        except Exception as exc:  # noqa: BLE001 - one hostile file must not stop the evaluation
            return None, f"The file could not be processed ({type(exc).__name__}).", None, None, None

    with ThreadPoolExecutor(4) as pool:
        yield from pool.map(prepare, items)


def evaluate_predictions(predictions: dict, *, threshold: float | None, positive: int | None,
                         bootstrap: int = 1000, groups=None) -> dict:
    """:func:`medclf_core.trust.metrics.evaluate_probabilities` of ``predictions`` (``y_true``, ``probs``,
    ``class_names`` and optionally ``ood`` flags, as :func:`predict_folder` returns them) at this
    threshold, plus ``"ood"``: :func:`medclf_core.trust.verdict.ood_block` (how many images were
    flagged and the metrics without them), or None when the predictions carry no flags, and
    ``"selective"``: :func:`medclf_core.trust.selective.selective_prediction` (accuracy against
    coverage when the least confident or most unfamiliar images are deferred; refused ones first). ``groups`` (a
    key per image): the 95% intervals resample whole groups (patients, cases), not images."""
    y, probs, names = predictions["y_true"], predictions["probs"], list(predictions["class_names"])
    result = evaluate_probabilities(y, probs, names, threshold=threshold, positive=positive, bootstrap=bootstrap,
                                    groups=groups)
    flags = predictions.get("ood")
    result["ood"] = None if flags is None else ood_block(y, probs, flags, names, threshold=threshold,
                                                         positive=positive, bootstrap=bootstrap,
                                                         unfamiliar=predictions.get("unfamiliar"), groups=groups)
    thr, pos = result["threshold"], (names.index(result["positive_class"]) if result["positive_class"] else None)
    result["selective"] = selective_prediction(y, probs, decide(probs, thr, pos), threshold=thr, positive=pos,
                                               ood_score=predictions.get("ood_score"), refused=flags,
                                               bootstrap=bootstrap)
    return result


def evaluate_folder(predictor, data: str | os.PathLike, split: str = "auto", *, bootstrap: int = 1000,
                    progress=None, with_predictions: bool = False, group_pattern: str | None = None) -> dict:
    """Metrics of a model on a dataset folder or zip (see :func:`predict_folder` for ``split`` and
    ``progress``): :func:`evaluate_predictions` at the model's threshold, plus ``split``, ``dataset``,
    ``skipped`` (unreadable files), ``model``, ``temperature`` (None when uncalibrated), in ``ood``
    the ``flagged_files``, and first ``overlap``: :func:`~medclf_core.inference.overlap.training_overlap`
    (are these images the model's training images? its ``message`` goes before the metrics; with a site
    calibration in use, also ``site_message``: :func:`~medclf_core.trust.sites.site_overlap_message`); the
    top-level metrics stay over every image. ``with_predictions``: also
    ``"predictions"``, what :func:`predict_folder` returned (for a page that draws them). ``group_pattern`` (a
    regular expression on file names, as training's): images whose names give one patient or case id are
    resampled together for the 95% intervals (``n_groups`` says how many groups; a name it does not match is a
    group of its own, and ``group_note`` says how many did not match: :func:`~medclf_core.data.split.unmatched_note`;
    a pattern that matches no name leaves the intervals resampling images)."""
    p = predict_folder(predictor, data, split, progress=progress)
    keys = [group_key(rel, group_pattern) for rel in p["rel"]] if group_pattern else []
    groups = [k or rel for k, rel in zip(keys, p["rel"], strict=True)] if any(keys) else None  # none: images
    result = evaluate_predictions(p, threshold=predictor.threshold, positive=predictor.positive, bootstrap=bootstrap,
                                  groups=groups)
    ood = result.pop("ood")  # after the run's facts, as `evaluate --json` has always printed it
    result = {"overlap": training_overlap(predictor.card, p["hashes"]), **result}
    if group_pattern:
        result["group_note"] = unmatched_note(p["rel"], group_pattern)
    result.update({"split": p["split"], "dataset": str(data), "skipped": p["skipped"],
                   "model": predictor.card.get("name"), "temperature": predictor.temperature, "ood": ood})
    result["ood"]["flagged_files"] = [r for r, f in zip(p["rel"], p["ood"], strict=True) if f]
    if getattr(predictor, "site", None):  # a site's calibration (without one the result is as it always was)
        result["calibration"] = f"site:{predictor.site['site']}"
        fitted_on = predictor.site.get("fingerprint")
        result["overlap"]["site_message"] = fitted_on and site_overlap_message(
            predictor.site, dataset_fingerprint(data, split=p["split"]))
    if with_predictions:
        result["predictions"] = p
    return result
