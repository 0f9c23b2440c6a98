"""A site's own calibration in use: a Predictor switched to it, and ``medclf recalibrate`` (fit, check, save).

:func:`use_site` makes a :class:`~medclf_core.inference.predictor.Predictor` use a site record's
temperature and threshold (:mod:`medclf_core.trust.sites`) instead of its card's; every result then
says ``"calibration": "site:<name>"``, and without a site nothing in a result changes.
:func:`with_site` gives a copy of a loaded predictor (the same model, no reload: what the app's site
picker needs). :func:`recalibrate` runs the model once over a site's labelled folder and
:func:`adopt_site` fits, cross-fits and saves from predictions already made (``recalibrate`` and the
Evaluate page's "adopt as this site's calibration" both end there).

Example (``predictor`` from ``Predictor.from_run``)::

    >>> rec = recalibrate(predictor, "site_images/", "st-marys")          # doctest: +SKIP
    >>> rec["after"]["ece"], rec["path"]                                  # doctest: +SKIP
    (0.031, 'models/chest-xray-pneumonia/sites/st-marys.json')
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from medclf_core.data.fingerprint import dataset_fingerprint
from medclf_core.inference.folder import predict_folder
from medclf_core.inference.overlap import training_overlap
from medclf_core.registry.names import check_site_name
from medclf_core.trust.calibration import apply_temperature, temperature_of
from medclf_core.trust.site_checks import needs_confirmation, site_warnings
from medclf_core.trust.sites import DEFAULT_TARGET_SENSITIVITY, load_site, save_site, site_calibration, site_card


def use_site(predictor, name: str, record: dict | None = None):
    """Switch ``predictor`` (in place) to the site calibration ``name`` of its run; the predictor back.
    ``record``: that site's record when the caller has already read it (:func:`~medclf_core.trust.sites.load_site`;
    the app reads it once for the card in use and the predictor), else it is read here.

    Its ``temperature`` and (binary models) ``threshold`` become the site's; its ``card`` becomes
    :func:`~medclf_core.trust.sites.site_card` (the site's temperature, threshold and ``threshold_rule``, and a
    ``site_calibration`` entry, so results kept under :func:`~medclf_core.inference.results.result_key` are kept
    apart from the card's); ``model_card`` keeps the model's own. Unknown site: :class:`~medclf_core.errors.ModelError` listing the known ones.
    """
    card = base_card(predictor)
    rec = record if record is not None else load_site(card.get("run_dir") or ".", name, model=card.get("name"))
    predictor.site, predictor.temperature = rec, float(rec["temperature"])
    if len(predictor.class_names) == 2:
        predictor.threshold = rec.get("threshold")
    predictor.model_card, predictor.card = card, site_card(card, rec)
    return predictor


def base_card(predictor) -> dict:
    """The model's own card, also when a site calibration is in use."""
    return getattr(predictor, "model_card", None) or predictor.card


def with_site(predictor, name: str | None, record: dict | None = None):
    """A shallow copy of ``predictor`` (sharing its loaded model and compiled forward pass) using the site
    calibration ``name`` (its ``record`` when already read: :func:`use_site`), or the card's calibration for None."""
    other = copy.copy(predictor)
    other.card, other.site, other.model_card = base_card(predictor), None, None
    other.temperature, other.threshold = temperature_of(other.card), other.card.get("threshold")
    return use_site(other, name, record) if name is not None else other


def raw_probabilities(predictor, probs):
    """The model's own probabilities from ``probs`` the predictor returned (its temperature undone:
    temperatures compose, so scaling by ``1/T`` undoes ``T``)."""
    t = predictor.temperature
    return apply_temperature(probs, None if t is None else 1.0 / t, positive=predictor.positive)


def adopt_site(predictor, predictions: dict, name: str, *, dataset: str, fingerprint: str | None,
               target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY, bootstrap: int = 1000,
               save: bool = True, force: bool = False) -> dict:
    """Fit, cross-fit and (``save``) write the site calibration ``name`` from labelled ``predictions`` of
    ``predictor`` (what :func:`medclf_core.inference.folder.predict_folder` returns: ``y_true``, ``probs`` and,
    for the training-image check, ``hashes``).

    The record (:func:`medclf_core.trust.sites.site_calibration`) is returned with ``"warnings"``
    (:func:`medclf_core.trust.site_checks.site_warnings`, with
    :func:`~medclf_core.inference.overlap.training_overlap` of the images) and ``"path"`` added when saved. A
    record with a warning that needs confirmation (worse than the card's, misses its target, the model's
    training images) is saved only with ``force``; otherwise it is returned unsaved, with ``"not_saved"``
    saying why (the fitted result is never lost).
    """
    check_site_name(name)
    card = base_card(predictor)
    raw = raw_probabilities(predictor, predictions["probs"])
    rec = site_calibration(name, predictions["y_true"], raw, card, target_sensitivity=target_sensitivity,
                           dataset=dataset, fingerprint=fingerprint, bootstrap=bootstrap)
    overlap = training_overlap(card, predictions["hashes"]) if predictions.get("hashes") else None
    rec["warnings"] = site_warnings(rec, overlap)
    if save and needs_confirmation(rec["warnings"]) and not force:
        rec["not_saved"] = ("Not saved: the warnings above need a decision (keep the card's calibration, or fit "
                            "again on more or other images of the site; to save it anyway, add --force).")
    elif save:
        rec["path"] = str(save_site(card["run_dir"], rec))
    return rec


def recalibrate(predictor, data: str | os.PathLike, name: str, *, split: str = "all",
                target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY, bootstrap: int = 1000,
                progress=None, force: bool = False) -> dict:
    """``medclf recalibrate``: the model over a site's labelled folder or zip (``<class>/`` images, as
    ``evaluate`` takes; every image unless ``split`` says otherwise), then :func:`adopt_site`; the record
    with ``"warnings"`` and ``"path"`` (or ``"not_saved"``: a warning needs ``force``). The weights and the card
    are not touched."""
    check_site_name(name)  # before the model runs over the whole folder
    predictions = predict_folder(predictor, data, split, progress=progress)
    return adopt_site(predictor, predictions, name, dataset=Path(data).name or str(data),
                      fingerprint=dataset_fingerprint(data, split=predictions["split"]),
                      target_sensitivity=target_sensitivity, bootstrap=bootstrap, force=force)
