"""Does an evaluation score a model on images it was trained on? :func:`training_overlap` says so before
the metrics, which would otherwise overstate how the model does on new images.

Two bases, the better first:

- **image hashes**: runs trained since issue 24 keep ``training_images.json`` (the pixel digest,
  :func:`medclf_core.data.audit.pixel_digest`, of every train, validation and test image; written at
  training from the audit's own hashes, so it costs nothing extra). An evaluated image with the same
  pixels as a train or validation image overlaps (the validation split tuned the threshold, the
  calibration and early stopping); one of the model's own held-out test images does not.
  :func:`record_training_images` writes the file afterwards for an older run whose dataset is at hand.
- **dataset fingerprint**: older runs keep only the audit's fingerprint of their
  whole dataset (``card["dataset"]["fingerprint"]``). The evaluated images having the same
  fingerprint means the same dataset: its train and validation images (counted in the card) overlap.
  A part of the training set, or the same images renamed, is not seen this way.

Example::

    >>> card = {"dataset": {"fingerprint": "f00", "counts": {"train": {"a": 6}, "val": {"a": 2}, "test": {"a": 2}}}}
    >>> training_overlap(card, {"a/1.png": "d1"}, fingerprint="f00")["n_overlapping"]
    8
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from medclf_core.data.audit import pixel_digest, pixel_fingerprint
from medclf_core.data.scan import scan_dataset
from medclf_core.errors import DatasetError
from medclf_core.io.atomic import write_json
from medclf_core.io.images import load_image
from medclf_core.registry.store import EVALUATION_FILE, TRAINING_IMAGES_FILE, read_card

TUNING_SPLITS = ("train", "val")  # the images a model was fitted or tuned on (every split but "test")
SPLIT_WORDS = {"train": "training split", "val": "validation split", "train+val": "training or validation split"}
DIGEST_WORDS = "md5 of the decoded pixels and their shape (medclf_core.data.audit.pixel_digest)"


def training_image_hashes(splits: Mapping, hashes: Mapping[str, str]) -> dict:
    """What training writes to ``training_images.json``: ``{"digest", "splits": {split: [pixel digests]}}``
    from the split items (``.rel``) and the audit's ``{relative path: pixel digest}``."""
    return {"digest": DIGEST_WORDS, "splits": {name: sorted({hashes[it.rel] for it in items if it.rel in hashes})
                       for name, items in splits.items()}}


def _read_hashes(card: Mapping) -> dict[str, set[str]] | None:
    """``{split: digests}`` from the run folder's ``training_images.json``, or None when there is none
    (or it cannot be read)."""
    run_dir = card.get("run_dir")
    if not run_dir:
        return None
    try:
        data = json.loads((Path(run_dir) / TRAINING_IMAGES_FILE).read_text())
        return {str(k): {str(d) for d in v} for k, v in data["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def training_overlap(card: Mapping, hashes: Mapping[str, str], *, fingerprint: str | None = None) -> dict:
    """How many of the evaluated images (``hashes``: ``{relative path: pixel digest}`` of each readable one)
    the model of ``card`` was trained or tuned on.

    Returns ``{"n_overlapping", "n", "basis", "message"}``: ``basis`` is ``"image hashes"``,
    ``"dataset fingerprint"`` or None (nothing to compare with: ``n_overlapping`` None); ``message`` is
    the plain warning to show before the metrics, None when nothing overlaps. With image hashes also
    ``n_<split>`` for each recorded split (``n_test``: the model's own held-out test images, no overlap).
    ``fingerprint``: :func:`~medclf_core.data.audit.pixel_fingerprint` of ``hashes`` (computed when not given).
    """
    n, known = len(hashes), _read_hashes(card)
    if known is not None:
        digests = list(hashes.values())
        counts = {s: sum(d in known[s] for d in digests) for s in known}
        k = sum(any(d in v for s, v in known.items() if s != "test") for d in digests)
        used = ", ".join(f"{SPLIT_WORDS.get(s, s)} {c}" for s, c in counts.items() if s != "test")
        message = None if not k else (
            f"{k} of the {n} evaluated images are identical (same pixels) to images this model was trained or "
            f"tuned on ({used}): the figures below overstate how it does on new images.")
        return {"n_overlapping": k, "n": n, "basis": "image hashes", "message": message,
                **{f"n_{s}": c for s, c in counts.items()}}
    recorded = (card.get("dataset") or {}).get("fingerprint")
    if not recorded:
        return {"n_overlapping": None, "n": n, "basis": None, "message": None}
    if (fingerprint or pixel_fingerprint(dict(hashes))) != recorded:
        return {"n_overlapping": 0, "n": n, "basis": "dataset fingerprint", "message": None}
    split_counts = (card.get("dataset") or {}).get("counts") or {}
    k = sum(int(v) for s in TUNING_SPLITS for v in (split_counts.get(s) or {}).values()) or n
    return {"n_overlapping": k, "n": n, "basis": "dataset fingerprint", "message": (
        f"These are the images this model was trained on (the same dataset fingerprint as its model card): {k} "
        f"of the {n} were used to train or tune it, so the figures below overstate how it does on new images. "
        "Evaluate on other data, or see the model's own held-out test split.")}


def record_training_images(run_dir: str | os.PathLike, data: str | os.PathLike) -> Path:
    """Write ``training_images.json`` for a run trained before runs kept it, from its dataset folder ``data``:
    the held-out test images are the ones its ``evaluation.json`` lists, every other readable image was in
    its train or validation split (``"train+val"``: the split is not re-run). Refused (:class:`DatasetError`)
    unless ``data`` has the card's dataset fingerprint (the same images, unchanged) and every listed test
    image is in it. Decodes every image once (about 20 s for 5,000 small JPEGs)."""
    run_dir, card = Path(run_dir), read_card(run_dir)
    hashes = {}
    for it in scan_dataset(data).items:
        try:
            hashes[it.rel] = pixel_digest(load_image(it.path).pixels)
        except Exception:  # noqa: BLE001 - an unreadable file is not in the fingerprint either
            continue
    if pixel_fingerprint(hashes) != (card.get("dataset") or {}).get("fingerprint"):
        raise DatasetError(f"{data} is not the dataset this model was trained on (its fingerprint differs).")
    test = {p["file"] for p in json.loads((run_dir / EVALUATION_FILE).read_text())["predictions"]}
    if not test <= set(hashes):
        raise DatasetError(f"{len(test - set(hashes))} of the model's test images are not in {data}.")
    splits = {"train+val": sorted({d for r, d in hashes.items() if r not in test}),
              "test": sorted({hashes[r] for r in test})}
    target = run_dir / TRAINING_IMAGES_FILE
    write_json(target, {"digest": DIGEST_WORDS, "splits": splits,
                        "note": "recorded after training: train and validation images not told apart"})
    return target
