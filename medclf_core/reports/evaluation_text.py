"""What the Evaluate page says about an evaluation's images: how many were read, refused and evaluated, which
answered images were misclassified, and which were refused (no Streamlit here; the page shows these).

Counts (:func:`image_counts`): of the ``files`` found, ``read`` were decoded and classified and ``not_read``
could not be read (listed by the page, never in the metrics); of the read ones, ``refused`` got no finding
(the out-of-distribution gate or the DICOM header said this is not an image the model reads) and ``answered``
did. The metrics cover every read image (``evaluated``), refused ones included, as ``medclf evaluate`` has
always reported them; the out-of-distribution check gives them without the refused.

Mistakes (:func:`mistakes`): a refused image has no finding, so it is never listed as misclassified with a
prediction; it is listed apart, with the reason it was refused (:func:`refused_rows`). An answered image that was
shown with a caution (unlike the training images, small, or in a plane the model cannot judge) is listed too, right
or wrong (:func:`cautioned_rows`), so a site sees which of its images the model finds unfamiliar and how it did.

    >>> c = image_counts({"files": ["a"] * 14, "skipped": [{"file": "x"}], "ood": [True, True] + [False] * 12})
    >>> progress_done(c)
    '14 of 15 files read and classified; 1 could not be read (listed below).'
    >>> counts_sentence(c)
    '15 files: 14 read and evaluated, 1 could not be read. 2 of the 14 were refused (no finding shown), 12 answered.'
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medclf_core.formatting import percent
from medclf_core.inference.results import headline
from medclf_core.io import deid
from medclf_core.trust.metrics import decide


def _images(k: int, word: str = "image") -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def image_counts(predictions: Mapping) -> dict:
    """``{"files", "read", "not_read", "refused", "answered", "evaluated"}`` of :func:`predict_folder`'s result
    (``ood`` flags optional: none refused without them)."""
    read, not_read = len(predictions["files"]), len(predictions.get("skipped") or [])
    refused = sum(1 for f in (predictions.get("ood") or []) if f is True)
    return {"files": read + not_read, "read": read, "not_read": not_read, "refused": refused,
            "answered": read - refused, "evaluated": read}


def progress_done(counts: Mapping) -> str:
    """The progress bar's last words: the files read and classified out of all found, and those not read."""
    text = f"{counts['read']} of {_images(counts['files'], 'file')} read and classified"
    if counts["not_read"]:
        text += f"; {counts['not_read']} could not be read (listed below)"
    return text + "."


def counts_sentence(counts: Mapping) -> str:
    """One line that makes every count of the evaluation add up: files, read, not read, refused, answered."""
    text = f"{_images(counts['files'], 'file')}: {counts['read']} read and evaluated"
    text += f", {counts['not_read']} could not be read." if counts["not_read"] else "."
    if counts["refused"]:
        text += (f" {counts['refused']} of the {counts['read']} {'was' if counts['refused'] == 1 else 'were'} "
                 f"refused (no finding shown), {counts['answered']} answered.")
    return text


def mistakes(predictions: Mapping, *, threshold: float | None, positive: int | None, site: str | None = None) -> dict:
    """``{"y_pred", "wrong", "refused", "n_answered", "n_refused_wrong", "binary", "rule"}``: the decisions (at
    the threshold for a binary model that has one, ``binary``, else the top class), the answered images whose
    decision is wrong, the refused images (no finding: never among ``wrong``), how many refused ones the metrics
    over all images count as wrong, and the decision rule in words (``site``: the site whose threshold it is)."""
    probs, y_true = np.asarray(predictions["probs"]), np.asarray(predictions["y_true"])
    binary = probs.ndim == 2 and probs.shape[1] == 2 and threshold is not None and positive is not None
    y_pred = decide(probs, threshold if binary else None, positive)
    flags = predictions.get("ood") or [None] * len(y_true)
    refused = np.array([f is True for f in flags], dtype=bool)
    wrong = y_pred != y_true
    return {"y_pred": y_pred, "wrong": np.flatnonzero(wrong & ~refused), "refused": np.flatnonzero(refused),
            "n_answered": int((~refused).sum()), "n_refused_wrong": int((wrong & refused).sum()), "binary": binary,
            "rule": ("(the prediction is the most probable class)" if not binary else
                     f"at the threshold of site '{site}'" if site else "at the model's threshold")}


def mistakes_caption(m: Mapping, max_shown: int) -> str:
    """Above the misclassified images: how many of the answered images, by which rule, and what the map shows."""
    k, n = len(m["wrong"]), m["n_answered"]
    of = f"the {n} answered images" if len(m["refused"]) else f"{n} images"
    if not k:
        return f"No image was misclassified {m['rule']}" + (f" ({of})." if len(m["refused"]) else ".")
    return (f"{k} of {of} {'is' if k == 1 else 'are'} misclassified {m['rule']}"
            + (f"; showing the first {max_shown}" if k > max_shown else "")
            + ". The heat map (Grad-CAM) shows what drove the wrong prediction.")


def refused_caption(m: Mapping) -> str:
    """Above the refused images' list: why they are not mistakes, and how the metrics over all images count them."""
    r, w = len(m["refused"]), m["n_refused_wrong"]
    return (f"{_images(r)} {'was' if r == 1 else 'were'} refused: the app shows no finding for "
            f"{'it' if r == 1 else 'them'}, so {'it is' if r == 1 else 'they are'} not listed as misclassified. The "
            f"metrics over all images above still count the model's output for {'it' if r == 1 else 'them'} "
            f"({w} of the {r} wrong {m['rule']}); the out-of-distribution check above gives the metrics without them.")


def shown_name(predictions: Mapping, i: int) -> str:
    """Image ``i``'s file name as every list shows it (:func:`medclf_core.io.deid.safe_file_label`)."""
    return deid.safe_file_label(predictions["rel"][i], deid.file_identifiers(predictions["files"][i]))


def refused_rows(predictions: Mapping, m: Mapping) -> list[dict]:
    """One row per refused image: ``file``, ``true class``, ``reason`` (the gate's words)."""
    names, reasons = predictions["class_names"], predictions.get("ood_reason") or [None] * len(predictions["files"])
    return [{"file": shown_name(predictions, int(i)), "true class": names[int(predictions["y_true"][i])],
             "reason": reasons[i] or "it does not look like the images this model was trained on"}
            for i in m["refused"]]


def cautioned(predictions: Mapping, m: Mapping) -> np.ndarray:
    """The answered images that were shown with a caution (``unfamiliar`` True and not refused), in order."""
    flags = predictions.get("unfamiliar") or []
    refused = set(map(int, m["refused"]))
    return np.array([i for i, f in enumerate(flags) if f is True and i not in refused], dtype=int)


def cautioned_caption(predictions: Mapping, m: Mapping) -> str:
    """Above the cautioned images' list: how many, and their accuracy beside the other answered images'.

    >>> p = {"y_true": np.array([0, 1, 1, 0]), "unfamiliar": [True, True, False, False], "ood": [False] * 4}
    >>> cautioned_caption(p, {"y_pred": np.array([0, 0, 1, 0]), "refused": np.array([], dtype=int)})
    '2 answered images were shown with a caution: 1 of them (50.0%) decided right, against 2 of the other 2 (100.0%).'
    """
    shown = cautioned(predictions, m)
    right = np.asarray(m["y_pred"]) == np.asarray(predictions["y_true"])
    others = np.setdiff1d(np.arange(len(right)), np.concatenate([shown, np.asarray(m["refused"], dtype=int)]))
    k, ok = len(shown), int(right[shown].sum())
    if k == 1:
        text = f"1 answered image was shown with a caution: it was decided {'right' if ok else 'wrong'}"
    else:
        text = f"{k} answered images were shown with a caution: {ok} of them ({percent(ok / k)}) decided right" \
            if k else ""
    if k and len(others):
        text += f", against {int(right[others].sum())} of the other {len(others)} ({percent(right[others].mean())})"
    return text + "." if text else text


def cautioned_rows(predictions: Mapping, m: Mapping) -> list[dict]:
    """One row per answered image shown with a caution: ``file``, ``true class``, ``decision``, ``right``,
    ``reason`` (why it got the caution)."""
    names, reasons = predictions["class_names"], predictions.get("unfamiliar_reason") or [None] * len(m["y_pred"])
    return [{"file": shown_name(predictions, int(i)), "true class": names[int(predictions["y_true"][i])],
             "decision": names[int(m["y_pred"][i])], "right": bool(m["y_pred"][i] == predictions["y_true"][i]),
             "reason": reasons[i] or "unlike this model's training images"}
            for i in cautioned(predictions, m)]


def mistake_caption(predictions: Mapping, m: Mapping, i: int, *, threshold: float | None,
                    positive: int | None) -> str:
    """``file: true NORMAL, predicted PNEUMONIA (P(PNEUMONIA) = 81.0%)``: the headline with P(positive class)."""
    names, probs = predictions["class_names"], np.asarray(predictions["probs"])
    binary = m["binary"]
    result = {"label": names[int(m["y_pred"][i])], "probabilities": dict(zip(names, map(float, probs[i]), strict=True)),
              "threshold": threshold if binary else None, "positive_class": names[positive] if binary else None}
    return f"{shown_name(predictions, i)}: true {names[int(predictions['y_true'][i])]}, predicted " + \
        headline(result).title
