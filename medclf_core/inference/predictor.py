"""Prediction for one or many images with a registered model.

:class:`Predictor` holds a loaded model and its card and applies the model's
operating threshold: for binary tasks the positive class is predicted when its
probability reaches the threshold chosen on validation data; otherwise argmax.
Images go through :func:`medclf_core.io.images.to_model_input`, the same path as training.

The trust layer (issue 14):

- **Calibration**: when the card has ``"calibration": {"temperature": T, ...}``, every
  probability the Predictor returns (``predict_batch``, ``predict_images``,
  ``predict_files``, ``predict``, and so ``describe`` of their rows) is
  temperature-scaled (:mod:`medclf_core.trust.calibration`); the card's threshold is on
  those calibrated probabilities. Older cards without it are used as they are.
  ``Predictor(..., site=NAME)`` uses a site's own temperature and threshold instead
  (:mod:`medclf_core.inference.sites`); its results then say ``"calibration": "site:NAME"``.
- **Out-of-distribution gate**: when the run folder has ``ood.npz``
  (:mod:`medclf_core.trust.ood`), the penultimate features come out of the same forward
  pass as the probabilities and are scored. Every result of ``predict_files`` /
  ``predict`` carries ``"ood"``, ``"ood_score"``, ``"ood_reason"`` and
  ``"ood_checks"`` (see :func:`medclf_core.trust.verdict.verdict`): ``"ood": None`` means
  *not checked* (the model has no gate and no DICOM header contradicted the card's
  ``intended_use``), never "in distribution". A DICOM whose Modality or
  BodyPartExamined contradicts the card's ``intended_use`` is flagged with or
  without a gate.

Example (``Predictor.from_run("chest-xray-pneumonia")`` loads a registered model and its card; here a
tiny untrained model whose zero bias gives every class 0.5, so the card's threshold decides)::

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros")])
    >>> p = Predictor(model, {"class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.5,
    ...                       "positive_class": "PNEUMONIA"})
    >>> p.predict_batch(np.zeros((3, 8, 8, 1), np.uint8)).round(3).tolist()  # any batch size, one trace
    [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    >>> r = p.predict([np.full((20, 30), 128, np.uint8)])[0]               # any image size
    >>> r.label, r["threshold"], r["ood"]                                    # no OOD gate: not checked
    ('PNEUMONIA', 0.5, None)

:meth:`Predictor.predict` and :meth:`Predictor.explain` return results ready to show
(:mod:`medclf_core.inference.results`); :mod:`medclf_core.inference.folder` runs a whole dataset.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from medclf_core.data.tta import VIEWS, check_views
from medclf_core.errors import MedclfError, ModelError
from medclf_core.explain import cams
from medclf_core.explain.faithfulness import deletion_faithfulness
from medclf_core.explain.render import compact_map
from medclf_core.explain.views import cam_view, view_forward
from medclf_core.inference.lite import FAST_METHODS, LiteModel, lite_heatmaps, load_lite
from medclf_core.inference.results import HeatMap, Prediction
from medclf_core.inference.sites import use_site, with_site
from medclf_core.io.images import load_image, to_model_input
from medclf_core.io.pixels import DecodedImage
from medclf_core.registry.card import positive_class_index
from medclf_core.registry.model_limits import class_outputs, image_input
from medclf_core.registry.store import MODEL_FILE, load_model_file, read_card, resolve_run
from medclf_core.trust.calibration import apply_temperature, temperature_of
from medclf_core.trust.pixel_facts import PixelFacts, pixel_facts
from medclf_core.trust.features import feature_model
from medclf_core.trust.metrics import decide
from medclf_core.inference.router import router_for
from medclf_core.inference.warmup import WARM_METHODS, warm_up_steps
from medclf_core.trust.ood import load_gate
from medclf_core.trust.verdict import HEADER_FACTS, verdict


class Predictor:
    """A model with its card. ``tta``: test-time views to average (default: the card's ``tta``; ``()`` for none).
    ``model``: a Keras model, or a :class:`~medclf_core.inference.lite.LiteModel` (:meth:`from_run`'s choice when
    the run's LiteRT files match: no TensorFlow until :attr:`model` is needed; same results, tested)."""

    def __init__(self, model, card: dict, tta: Sequence[str] | None = None, router=None, site: str | None = None):
        self.lite: LiteModel | None = model if isinstance(model, LiteModel) else None
        self._keras = None if self.lite is not None else model
        self._keras_lock = threading.Lock()
        self.card = card
        self.router = router  # a ModalityRouter (medclf_core.inference.router) or None: no modality check
        lite = self.lite
        self.image_size, self.channels = (lite.image_size, lite.channels) if lite else image_input(model)
        n_outputs = lite.n_classes if lite else class_outputs(model)
        self.class_names: list[str] = list(card.get("class_names") or [f"class_{i}" for i in range(n_outputs)])
        if len(self.class_names) != n_outputs:
            raise ModelError(f"The model card lists {len(self.class_names)} classes but the model has {n_outputs} "
                             "outputs; they do not belong together.")
        self.threshold: float | None = card.get("threshold")
        try:
            self.tta = check_views(card.get("tta") if tta is None else tta)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        self.positive = positive_class_index(self.class_names, card.get("positive_class"))
        self.temperature: float | None = temperature_of(card)
        self.intended_use: dict | None = card.get("intended_use") if isinstance(card.get("intended_use"), dict) else None
        self.gate = load_gate(card["run_dir"]) if card.get("run_dir") else None
        fm = feature_model(model) if self.gate is not None and self.lite is None else None
        if self.gate is not None:
            n_feat = self.lite.feature_dim if self.lite is not None else int(np.prod(fm.outputs[1].shape[1:]))
            if n_feat != self.gate.dim:
                raise ModelError(f"The out-of-distribution gate (ood.npz) expects {self.gate.dim} features but the "
                                 f"model gives {n_feat}; refit it with `python -m medclf_core refit-trust`.")
        self._forward = self.lite.forward if self.lite is not None else \
            view_forward(fm or model)  # one tf.function, batch dimension None: one trace for every batch size
        self.site: dict | None = None  # a site calibration in use (site=NAME), else the card's
        if site is not None:
            use_site(self, site)

    @classmethod
    def from_run(cls, run: str | os.PathLike, models_dir: str | os.PathLike | None = None,
                 tta: Sequence[str] | None = None, router: str | None = "auto", site: str | None = None) -> Predictor:
        """``router="auto"``: the bundled imaging-modality model routes the images of a model whose card
        declares its modalities (:func:`medclf_core.inference.router.router_for`); None: no router.
        ``site``: a site calibration of this run (``sites/NAME.json``) instead of the card's."""
        run_dir = resolve_run(run, models_dir)
        (card := read_card(run_dir))["run_dir"] = str(run_dir)  # a ModelCard, as load_run gives it
        model = load_lite(run_dir, card) or load_model_file(run_dir / MODEL_FILE)  # LiteRT when its files match
        routed = router_for(card, lambda d: cls.from_run(d, tta=(), router=None), models_dir) \
            if router == "auto" else None
        return cls(model, card, tta, router=routed, site=site)

    @property
    def model(self):
        """The Keras model; with the LiteRT backend loaded (TensorFlow imported) on first use, once."""
        if self._keras is None:
            with self._keras_lock:
                if self._keras is None:
                    self._keras = load_model_file(os.path.join(self.card["run_dir"], MODEL_FILE))
        return self._keras

    def needs_keras(self, method: str = "gradcam", engine: str = "compiled") -> bool:
        """True when :meth:`explain` needs the Keras model: without LiteRT, or for the ``tf-keras-vis`` engine."""
        return self.lite is None or method not in FAST_METHODS or engine != "compiled"

    @property
    def keras_loaded(self) -> bool:
        return self._keras is not None

    def with_site(self, site: str | None) -> Predictor:
        """This predictor (the same loaded model) with a site's calibration, or the card's for None."""
        return with_site(self, site)

    @property
    def cam_layer(self) -> str | None:
        return self.card.get("cam_layer")

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return to_model_input(pixels, self.image_size, self.channels)

    def predict_batch(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, K) for prepared uint8 inputs (N, S, S, C), averaged over the test-time views
        and temperature-scaled when the card is calibrated."""
        return self.predict_batch_with_features(batch, batch_size)[0]

    def predict_batch_with_features(self, batch: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray,
                                                                                          np.ndarray | None]:
        """``(probabilities (N, K), features (N, D) or None)`` in one forward pass per view.

        The features (input of the ``predictions`` layer, unflipped view) are computed only
        when the model has an OOD gate; otherwise None and the plain model runs.
        """
        probs, feats = [], []
        for start in range(0, len(batch), batch_size):
            chunk = np.asarray(batch[start:start + batch_size], dtype=np.float32)
            p, f = self._run(chunk)
            for name in self.tta:
                p = p + self._run(np.ascontiguousarray(VIEWS[name](chunk)))[0]
            probs.append(p / (1 + len(self.tta)))
            if f is not None:
                feats.append(f.reshape(len(chunk), -1))
        out = np.concatenate(probs) if probs else np.zeros((0, len(self.class_names)))
        if self.temperature is not None and len(out):
            out = apply_temperature(out, self.temperature, positive=self.positive)
        if self.gate is None:
            return out, None
        return out, (np.concatenate(feats) if feats else np.zeros((0, self.gate.dim), dtype=np.float32))

    def _run(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probabilities float64, features float32 or None)`` of one float32 chunk, one forward pass."""
        out = self._forward(chunk)
        if self.gate is None:
            return np.asarray(out[0] if self.lite is not None else out, dtype=np.float64), None
        return np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.float32)

    def warm_up(self, methods: Sequence[str] = WARM_METHODS) -> None:
        """Trace every graph a page uses (prediction, maps, faithfulness check; on LiteRT, which traces nothing, the
        prediction and first map) on a dummy image: :func:`medclf_core.inference.warmup.warm_up_steps`, to the end."""
        for _ in warm_up_steps(self, methods):
            pass

    def predict_images(self, images: Sequence[np.ndarray | DecodedImage], batch_size: int = 32) -> np.ndarray:
        arrays = [im.pixels if isinstance(im, DecodedImage) else im for im in images]
        return self.predict_batch(np.stack([self.prepare(a) for a in arrays]), batch_size) if arrays else \
            np.zeros((0, len(self.class_names)))

    def verdicts(self, features: np.ndarray | None, dicom: Sequence[dict | None] | None = None,
                 n: int | None = None, prepared: np.ndarray | None = None,
                 pixels: Sequence[PixelFacts | None] | None = None) -> list[dict]:
        """The OOD fields (:func:`medclf_core.trust.verdict.verdict`) of ``n`` results, from their features (or None
        without a gate), their DICOM header facts (``Modality``, ``BodyPartExamined``, ``PatientAge``; None for
        non-DICOM), with a router the modality probabilities of their ``prepared`` inputs, and the facts of their
        original ``pixels`` (:func:`medclf_core.trust.pixel_facts.pixel_facts`: colour, size; None: unknown)."""
        n = len(features) if features is not None else (len(dicom) if dicom is not None else n or 0)
        dicom = list(dicom) if dicom is not None else [None] * n
        facts = [f or PixelFacts() for f in pixels] if pixels is not None else [PixelFacts()] * n
        scores = self.gate.score(features) if self.gate is not None and features is not None else None
        routes = self.router.probabilities(prepared, features, routed=self) if self.router is not None and \
            prepared is not None else [None] * n
        return [verdict(self.gate, None if features is None else features[i], self.intended_use, dicom[i],
                        score=None if scores is None else scores[i], router=routes[i], chroma=facts[i].chroma,
                        size=facts[i].size, input_side=self.image_size) for i in range(n)]

    def predict(self, images: Sequence[np.ndarray | DecodedImage], dicom: Sequence[dict | None] | None = None,
                batch_size: int = 32) -> list[Prediction]:
        """One :class:`~medclf_core.inference.results.Prediction` per image (:meth:`describe`: decision,
        probabilities, OOD verdict), from one forward pass.

        ``dicom`` gives each image's DICOM header facts (e.g. :func:`medclf_core.io.deid.safe_metadata`,
        which the app already reads for display), or None for a non-DICOM image.
        """
        arrays = [im.pixels if isinstance(im, DecodedImage) else im for im in images]
        if not arrays:
            return []
        prepared = np.stack([self.prepare(a) for a in arrays])
        probs, feats = self.predict_batch_with_features(prepared, batch_size)
        verdicts = self.verdicts(feats, dicom, len(arrays), prepared, [pixel_facts(a) for a in arrays])
        return [self.describe(row, v) for row, v in zip(probs, verdicts, strict=True)]

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return decide(probs, self.threshold, self.positive)

    def explain(self, images: Sequence[np.ndarray | DecodedImage], method: str = "gradcam", class_index=None, *,
                faithfulness: bool = False, compact: bool = False, prepared: np.ndarray | None = None,
                batch_size: int = 16, engine: str = "compiled", max_channels: int | None = None) -> list[HeatMap]:
        """One :class:`~medclf_core.inference.results.HeatMap` per image (maps from
        :func:`medclf_core.explain.cams.heatmaps`): the one way from a prediction to a map, its
        overlay (``.overlay(opacity)``) and its faithfulness in words (``.faithfulness_caption``).

        ``images``: decoded images or pixel arrays of any size (each map comes back at its
        image's size). ``compact``: keep each map at display size instead
        (:func:`~medclf_core.explain.render.compact_map`: 1 MB, not 16, for a 2048 px X-ray), for
        a caller that keeps many. ``prepared``: the same images already prepared for the model
        (N, S, S, C, from :meth:`prepare`, e.g. the batch just predicted); without it each
        image is prepared once here, and the one prepared batch serves the map and the
        faithfulness score. ``method``: ``"gradcam"``, ``"gradcam++"`` or ``"scorecam"``.
        ``class_index``: None for the class the prediction names (the card's threshold
        applied, as in :meth:`describe`), a class index or name, or one per image.
        ``faithfulness``: also score each map (as returned) with :meth:`check_faithfulness`.

        Example: ``p.explain([xray], "gradcam++", "PNEUMONIA", faithfulness=True)[0].faithfulness`` -> 0.41.
        """
        arrays = [im.pixels if isinstance(im, DecodedImage) else np.asarray(im) for im in images]
        if not arrays:
            return []
        x = self._prepared(arrays, prepared)
        indices = self._class_indices(class_index, x, batch_size)
        if method not in cams.METHODS:
            raise ValueError(f"Unknown method '{method}'; choose from {', '.join(cams.METHODS)}.")
        if not self.needs_keras(method, engine):
            maps = lite_heatmaps(self.lite, arrays, x, method, indices, batch_size,
                                 cams.SCORECAM_MAX_CHANNELS if max_channels is None else max_channels)
        else:
            maps = cams.heatmaps(self.model, arrays, method=method, class_index=indices, cam_layer=self.cam_layer,
                                 batch_size=batch_size, engine=engine, inputs=x,
                                 max_channels=cams.SCORECAM_MAX_CHANNELS if max_channels is None else max_channels)
        out = [HeatMap(heatmap=compact_map(m) if compact else m, image=a, method=method, class_index=int(k),
                       class_name=self.class_names[int(k)])
               for m, a, k in zip(maps, arrays, indices, strict=True)]
        return self.check_faithfulness(out, prepared=x) if faithfulness else out

    def check_faithfulness(self, heat_maps: Sequence[HeatMap], *, prepared: np.ndarray | None = None) -> list[HeatMap]:
        """The same maps with their deletion-curve score (:func:`medclf_core.explain.faithfulness.deletion_faithfulness`,
        on the class's log-odds from the model's own pre-softmax logits, one view, uncalibrated; ~38 extra
        forward passes per image, all in one batch): lets a caller show a map first and score it after.
        ``prepared`` as in :meth:`explain`."""
        if not heat_maps:
            return []
        x = self._prepared([h.image for h in heat_maps], prepared)
        scores = deletion_faithfulness(self._model_logits, x, [h.heatmap for h in heat_maps],
                                       np.asarray([h.class_index for h in heat_maps], dtype=np.int64),
                                       output="logits")
        return [h.scored(d) for h, d in zip(heat_maps, scores, strict=True)]

    def _prepared(self, arrays: Sequence[np.ndarray], prepared: np.ndarray | None) -> np.ndarray:
        """The model inputs of ``arrays``: ``prepared`` when given (checked), else prepared here."""
        x = np.stack([self.prepare(a) for a in arrays]) if prepared is None else np.asarray(prepared)
        if x.shape != (len(arrays), self.image_size, self.image_size, self.channels):
            raise ValueError(f"prepared must be (N, {self.image_size}, {self.image_size}, {self.channels}) "
                             f"with one row per image, not {x.shape}.")
        return x

    def _class_indices(self, class_index, x: np.ndarray, batch_size: int) -> np.ndarray:
        """Per-image class indices from None (the decided class), an int, a class name, or one per image."""
        n = len(x)
        if class_index is None:
            return np.asarray(self.decide(self.predict_batch(x, batch_size)), dtype=np.int64)
        one = isinstance(class_index, int | str | np.integer)
        values = [class_index] * n if one else list(class_index)
        if len(values) != n:
            raise ValueError(f"class_index must be None, one class, or one class per image ({n}).")
        out = []
        for v in values:
            if isinstance(v, str):
                if v not in self.class_names:
                    raise ValueError(f"Unknown class '{v}'; the model's classes are {', '.join(self.class_names)}.")
                v = self.class_names.index(v)
            if not 0 <= int(v) < len(self.class_names):
                raise ValueError(f"class_index must be in 0..{len(self.class_names) - 1}.")
            out.append(int(v))
        return np.asarray(out, dtype=np.int64)

    def _model_logits(self, batch: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The model's own pre-softmax logits (one view, uncalibrated): what a heat map explains. They come
        from the logits view the heat maps already use (:func:`medclf_core.explain.views.logits_view`: the
        model's layers up to its classifier Dense, activation left out), traced once per view (views.view_forward)."""
        forward = self.lite.logits if self.lite is not None else \
            view_forward(cam_view(self.model, self.cam_layer)[0])  # Score-CAM's traced pass too
        return np.concatenate([np.asarray(forward(np.asarray(batch[s:s + batch_size], np.float32)), np.float64)
                               for s in range(0, len(batch), batch_size)])

    def describe(self, probs_row: np.ndarray, ood: dict | None = None) -> Prediction:
        """Label, probabilities and the thresholded decision for one image.

        ``probs_row`` is a row of :meth:`predict_batch` (already calibrated); ``ood`` its
        OOD fields (:meth:`verdicts`), else the result says "not checked" (``"ood": None``).
        """
        label = self.class_names[int(self.decide(probs_row[None])[0])]
        out = Prediction(label=label,
                         probabilities={c: float(p) for c, p in zip(self.class_names, probs_row, strict=True)})
        out.update(ood if ood is not None else verdict(None, None))  # nothing checked: the one "not checked" record
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.site is not None:
            out["calibration"] = f"site:{self.site['site']}"
        if self.threshold is not None and self.positive is not None:
            out["threshold"] = self.threshold
            out["positive_class"] = self.class_names[self.positive]
        if self.tta:
            out["tta"] = list(self.tta)
        if (self.card.get("ensemble") or {}).get("members"):
            out["ensemble"] = int(self.card["ensemble"]["members"])
        if (self.intended_use or {}).get("class_labels"):
            out["class_labels"] = dict(self.intended_use["class_labels"])  # the headline's plain words
        return out

    def predict_files(self, files: Sequence[str | os.PathLike], batch_size: int = 32, *,
                      decoded: dict | None = None) -> list[dict]:
        """One result per file, in order: ``{"file", "label", "probabilities", "ood", "ood_score",
        "ood_reason", "ood_checks", ...}`` or ``{"file", "error"}``.

        A file that cannot be decoded gets an ``error`` and never stops the others. ``decoded``
        (a dict) receives ``{index in files: DecodedImage}`` of the files that decoded, so a caller
        that also draws them (``predict --cam``) does not decode them again.
        """
        results: list[dict] = []
        good: list[tuple] = []  # (index in results, prepared input, pixel facts)
        headers: list[dict | None] = []
        for f in files:
            entry = {"file": str(f)}
            try:
                img = load_image(f)
                if decoded is not None:
                    decoded[len(results)] = img
                good.append((len(results), self.prepare(img.pixels), pixel_facts(img.pixels)))
                headers.append(self.dicom_facts(img))
                if img.notes:
                    entry["notes"] = img.notes
                if img.warnings:
                    entry["warnings"] = img.warnings
            except MedclfError as exc:
                entry["error"] = str(exc)
            except MemoryError:
                entry["error"] = "The image is too large to process with the memory available."
            except Exception as exc:  # noqa: BLE001 - one hostile file must never stop the others
                entry["error"] = f"The file could not be processed ({type(exc).__name__})."
            results.append(entry)
        if good:
            prepared = np.stack([a for _, a, _ in good])
            probs, feats = self.predict_batch_with_features(prepared, batch_size)
            verdicts = self.verdicts(feats, headers, len(good), prepared, [g[2] for g in good])
            for (i, *_), row, v in zip(good, probs, verdicts, strict=True):
                results[i].update(self.describe(row, v))
        return results

    def dicom_facts(self, img: DecodedImage) -> dict | None:
        """The header facts the checks read (:data:`~medclf_core.trust.verdict.HEADER_FACTS`: modality, body part, age,
        image type) of a decoded DICOM (from the parse that decoded its pixels) when the card declares an intended use
        to check them against; else (other formats too) None, never a flag."""
        if not self.intended_use or img.dicom is None:
            return None
        return {k: v for k, v in img.dicom.metadata.items() if k in HEADER_FACTS}

