"""Prediction for one or many images with a registered model.

:class:`Predictor` holds a loaded model and its card and applies the model's
operating threshold: for binary tasks the positive class is predicted when its
probability reaches the threshold chosen on validation data; otherwise argmax.
Images go through :func:`medclf_core.images.to_model_input`, the same path as
training.

Example::

    >>> p = Predictor.from_run("chest_xray")                  # doctest: +SKIP
    >>> p.predict_files(["a.png", "b.dcm"])[0]["label"]       # doctest: +SKIP
    'PNEUMONIA'
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from medclf_core.errors import ImageError, MedclfError, ModelError
from medclf_core.evaluation import decide, positive_class_index
from medclf_core.images import DecodedImage, load_image, to_model_input
from medclf_core.registry import load_run
from medclf_core.tta import average_views, check_views


class Predictor:
    """A model with its card. ``tta``: test-time views to average (default: the card's ``tta``; ``()`` for none)."""

    def __init__(self, model, card: dict, tta: Sequence[str] | None = None):
        self.model = model
        self.card = card
        self.image_size, self.channels = _image_input(model)
        n_outputs = _class_output(model)
        self.class_names: list[str] = list(card.get("class_names") or [f"class_{i}" for i in range(n_outputs)])
        if len(self.class_names) != n_outputs:
            raise ModelError(f"The model card lists {len(self.class_names)} classes but the model has {n_outputs} "
                             "outputs; they do not belong together.")
        self.threshold: float | None = card.get("threshold")
        try:
            self.tta = check_views(card.get("tta") if tta is None else tta)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        pos = card.get("positive_class")
        self.positive = self.class_names.index(pos) if pos in self.class_names else positive_class_index(self.class_names)

    @classmethod
    def from_run(cls, run: str | os.PathLike, models_dir: str | os.PathLike | None = None,
                 tta: Sequence[str] | None = None) -> Predictor:
        model, card = load_run(run, models_dir)
        return cls(model, card, tta)

    @property
    def cam_layer(self) -> str | None:
        return self.card.get("cam_layer")

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return to_model_input(pixels, self.image_size, self.channels)

    def predict_batch(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, K) for prepared uint8 inputs (N, S, S, C), averaged over the test-time views."""
        out = []
        for start in range(0, len(batch), batch_size):
            chunk = np.asarray(batch[start:start + batch_size], dtype=np.float32)
            out.append(average_views(self.model.predict_on_batch, chunk, self.tta))
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))

    def predict_images(self, images: Sequence[np.ndarray | DecodedImage], batch_size: int = 32) -> np.ndarray:
        arrays = [im.pixels if isinstance(im, DecodedImage) else im for im in images]
        return self.predict_batch(np.stack([self.prepare(a) for a in arrays]), batch_size) if arrays else \
            np.zeros((0, len(self.class_names)))

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return decide(probs, self.threshold, self.positive)

    def describe(self, probs_row: np.ndarray) -> dict:
        """Label, probabilities and the thresholded decision for one image."""
        label = self.class_names[int(self.decide(probs_row[None])[0])]
        out = {"label": label, "probabilities": {c: float(p) for c, p in zip(self.class_names, probs_row, strict=True)}}
        if self.threshold is not None and self.positive is not None:
            out["threshold"] = self.threshold
            out["positive_class"] = self.class_names[self.positive]
        if self.tta:
            out["tta"] = list(self.tta)
        members = (self.card.get("ensemble") or {}).get("members")
        if members:
            out["ensemble"] = int(members)
        return out

    def predict_files(self, files: Sequence[str | os.PathLike], batch_size: int = 32) -> list[dict]:
        """One result per file, in order: ``{"file", "label", "probabilities", ...}`` or ``{"file", "error"}``.

        A file that cannot be decoded gets an ``error`` and never stops the others.
        """
        results: list[dict] = []
        good: list[tuple[int, np.ndarray]] = []
        for f in files:
            entry = {"file": str(f)}
            try:
                img = load_image(f)
                good.append((len(results), self.prepare(img.pixels)))
                if img.notes:
                    entry["notes"] = img.notes
            except MedclfError as exc:
                entry["error"] = str(exc)
            except MemoryError:
                entry["error"] = "The image is too large to process with the memory available."
            except Exception as exc:  # noqa: BLE001 - one hostile file must never stop the others
                entry["error"] = f"The file could not be processed ({type(exc).__name__})."
            results.append(entry)
        if good:
            probs = self.predict_batch(np.stack([a for _, a in good]), batch_size)
            for (i, _), row in zip(good, probs, strict=True):
                results[i].update(self.describe(row))
        return results


def _image_input(model) -> tuple[int, int]:
    """``(side, channels)`` of a model taking one square image, else a plain :class:`ModelError`."""
    shapes = model.input_shape
    if isinstance(shapes, list):
        if len(shapes) != 1:
            raise ModelError(f"This model takes {len(shapes)} inputs; medclf models take one image.")
        shapes = shapes[0]
    shape = tuple(shapes[1:])
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ModelError(f"This model expects input of shape {shape}; medclf needs images of shape "
                         "(size, size, 1) for grayscale or (size, size, 3) for colour.")
    if shape[0] is None or shape[1] is None or shape[0] != shape[1]:
        raise ModelError(f"This model expects {shape[0]}x{shape[1]} images; medclf needs a fixed square size.")
    return int(shape[0]), int(shape[2])


def _class_output(model) -> int:
    """Number of classes of a model with one (N, K) probability output, else :class:`ModelError`."""
    shape = model.output_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ModelError(f"This model has {len(shape)} outputs; medclf needs one output of class probabilities.")
        shape = shape[0]
    if len(shape) != 2 or not shape[1] or shape[1] < 2:
        raise ModelError(f"This model's output has shape {tuple(shape)}; medclf needs one probability per class "
                         "(at least two classes).")
    return int(shape[1])


def predict_folder(predictor: Predictor, data: str | os.PathLike, split: str = "auto", *, progress=None) -> dict:
    """Probabilities for every image of a dataset folder or zip laid out as for training.

    ``split``: ``auto`` uses the ``test`` folder of a pre-split dataset, else every
    image; ``all``, ``train``, ``val`` or ``test`` choose explicitly. Dataset class
    folders are matched to the model's classes by name (case-insensitive); a
    dataset may hold a subset of them. Unreadable files are skipped and listed.
    Returns ``{"files" (absolute paths), "rel", "y_true" (N,), "probs" (N, K), "skipped",
    "split", "class_names", "dataset"}``: what a threshold slider or a metrics report needs.
    """
    from concurrent.futures import ThreadPoolExecutor

    from medclf_core.data import scan_dataset
    from medclf_core.errors import DatasetError

    index = scan_dataset(data)
    lower = {c.lower(): i for i, c in enumerate(predictor.class_names)}
    unknown = [c for c in index.class_names if c.lower() not in lower]
    if unknown:
        raise DatasetError(f"The dataset has class folder(s) {', '.join(unknown)} that the model does not know "
                           f"(model classes: {', '.join(predictor.class_names)}).")
    if split == "auto":
        split = "test" if index.presplit and any(it.split == "test" for it in index.items) else "all"
    items = [it for it in index.items if split == "all" or it.split == split]
    if not items:
        raise DatasetError(f"No images in split '{split}' of {data}.")

    def prep(item):
        try:
            return predictor.prepare(load_image(item.path).pixels), None
        except ImageError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one hostile file must not stop the evaluation
            return None, f"The file could not be processed ({type(exc).__name__})."

    arrays, labels, files, rel, skipped = [], [], [], [], []
    with ThreadPoolExecutor(4) as pool:
        for n, (item, (arr, err)) in enumerate(zip(items, pool.map(prep, items), strict=True), 1):
            if err:
                skipped.append({"file": item.rel, "error": err})
            else:
                arrays.append(arr)
                labels.append(lower[index.class_names[item.label].lower()])
                files.append(item.path)
                rel.append(item.rel)
            if progress:
                progress(n, len(items))
    if not arrays:
        raise DatasetError("None of the images could be read.")
    return {"files": files, "rel": rel, "y_true": np.asarray(labels, dtype=int),
            "probs": predictor.predict_batch(np.stack(arrays)), "skipped": skipped, "split": split,
            "class_names": list(predictor.class_names), "dataset": str(data)}


def evaluate_folder(predictor: Predictor, data: str | os.PathLike, split: str = "auto", *, bootstrap: int = 1000,
                    progress=None) -> dict:
    """Metrics of a model on a dataset folder or zip (see :func:`predict_folder` for ``split``):
    :func:`medclf_core.evaluation.evaluate_probabilities` at the model's threshold, plus
    ``split``, ``dataset``, ``skipped`` (unreadable files) and ``model``."""
    from medclf_core.evaluation import evaluate_probabilities

    p = predict_folder(predictor, data, split, progress=progress)
    result = evaluate_probabilities(p["y_true"], p["probs"], predictor.class_names, threshold=predictor.threshold,
                                    positive=predictor.positive, bootstrap=bootstrap)
    result.update({"split": p["split"], "dataset": str(data), "skipped": p["skipped"],
                   "model": predictor.card.get("name")})
    return result
