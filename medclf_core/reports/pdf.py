"""A printable one-page PDF report per image, without patient identifiers.

:func:`write_report` writes one A4 PDF for one prediction result (a row of
:meth:`medclf_core.inference.predictor.Predictor.predict_files` / ``predict``): the image and its
heat-map overlay side by side, the verdict (finding, finding with a caution, or refused, with the reason),
the headline (:func:`medclf_core.inference.results.headline`) and the threshold it was taken at, the
calibration in use, every class probability (capped at >99% / <1%), the heat map's method, target class and
faithfulness, the model card's facts (name, task, architecture, input, test metrics with their n, intended
use) and the research-use notice on every page.

What a report never holds: a folder path, a DICOM header value (only the file's *base name*,
scrubbed by :func:`medclf_core.io.deid.safe_file_label`, the rule the CSV export uses: the header's
identifying values given in ``identifying`` and MRN-like tokens become ``[redacted]``), or any
key of ``result`` other than those listed above. Free text from the result (the OOD reason) is
scrubbed with :func:`medclf_core.io.deid.redact`.

:func:`write_reports` is the batch form used by ``predict --report DIR``: one PDF per readable
image, named ``<k>_<de-identified stem>_report.pdf``, with the image's heat map (the decoded images and
maps the caller already has are reused; the others are made here).
:func:`report_bytes` returns the PDF as bytes (for a download button) and :func:`report_file_name`
a de-identified file name for it.

PDF library: fpdf2 (pure Python, LGPL-3.0, maintained by the py-pdf organisation; depends only on
Pillow, fontTools and defusedxml). The built-in Helvetica font covers Latin-1; other characters are
written as ``?``.

Example (``predict --report`` does this for each file, with the image's Grad-CAM map)::

    >>> import numpy as np
    >>> result = {"file": "/scans/Doe^Jane_MRN-1234567.png", "label": "PNEUMONIA",
    ...           "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8}, "threshold": 0.5, "positive_class": "PNEUMONIA"}
    >>> card = {"name": "chest-demo", "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.5}
    >>> pixels = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    >>> pdf = report_bytes(result, pixels, pixels / 255.0, card, identifying=["Doe^Jane"])
    >>> pdf[:5]
    b'%PDF-'
    >>> report_file_name(result["file"], ["Doe^Jane"])  # the name and the MRN-like token scrubbed
    'redacted_redacted_report.pdf'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medclf_core.explain.render import OVERLAY_OPACITY
from medclf_core.formatting import number, percent, probability_text
from medclf_core.io.atomic import write_bytes_atomically
from medclf_core.io.deid import redact, safe_file_label, safe_file_stem
from medclf_core.io.images import as_gray_or_rgb_uint8, load_image
from medclf_core.reports.pdf_layout import NOTICE, NOTICE_DETAIL, Page, latin1

if TYPE_CHECKING:
    from medclf_core.inference.results import HeatMap

_MAX_IMAGE_SIDE = 800  # pixels embedded per picture: enough for print, keeps a report small
_IMAGE_W = 85.0  # mm per picture (two side by side on A4)


def write_report(result: Mapping, pixels: np.ndarray | None, heatmap: np.ndarray | HeatMap | None, card: Mapping,
                 path: str | os.PathLike, *, identifying: Iterable[str] = (), opacity: float = OVERLAY_OPACITY) -> Path:
    """Write the report of one image to ``path`` (atomically: a temporary file, then a rename).

    ``result``: the image's prediction (``file``, ``label``, ``probabilities``, and optionally
    ``threshold``, ``positive_class``, ``temperature``, ``tta``, ``ood``, ``ood_score``, ``ood_reason``).
    ``pixels``: the decoded image (uint8 (H, W) or (H, W, 3)); ``heatmap``: its ``HeatMap`` (the report names
    its method, target class and faithfulness), a bare map in [0, 1], or None (the report says there is none).
    ``card``: the model card. ``identifying``: strings to scrub from the file name and texts
    (:func:`medclf_core.io.deid.identifying_values` of a DICOM).
    """
    path = Path(path)
    data = report_bytes(result, pixels, heatmap, card, identifying=identifying, opacity=opacity)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, data)
    return path


def report_bytes(result: Mapping, pixels: np.ndarray | None, heatmap: np.ndarray | HeatMap | None, card: Mapping, *,
                 identifying: Iterable[str] = (), opacity: float = OVERLAY_OPACITY) -> bytes:
    """The PDF of :func:`write_report` as bytes: title, pictures, decision, class probabilities, model card."""
    from medclf_core.registry.card import ModelCard

    identifying = [str(v) for v in identifying]
    c = card if isinstance(card, ModelCard) else ModelCard.from_dict(dict(card))
    page = Page()
    _title(page, result, c.name, identifying)
    _pictures(page, pixels, getattr(heatmap, "heatmap", heatmap), opacity)
    _decision(page, result, c, identifying)
    _probabilities(page, result)
    _heat_map_facts(page, heatmap, result)
    page.heading("Model card")
    page.rows(_card_facts(c))
    return bytes(page.pdf.output())


def _title(page: Page, result: Mapping, model_name: str, identifying: list[str]) -> None:
    """The title, the de-identified image name, the model, the date and the boxed research-use notice."""
    from fpdf.enums import XPos, YPos

    page.line("medclf prediction report", 15, "B", 8)
    label = safe_file_label(result.get("file", "") or "", identifying) or "(unnamed image)"
    page.line(f"Image: {label}", 9, "", 4.6, wrap_chars=True)
    page.line(f"Model: {model_name}    Report created: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}", 9)
    pdf = page.pdf
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(255, 235, 235)
    pdf.multi_cell(page.width, 5, latin1(f"{NOTICE} {NOTICE_DETAIL}"), border=1, fill=True, new_x=XPos.LMARGIN,
                   new_y=YPos.NEXT, align="L")


def _pictures(page: Page, pixels: np.ndarray | None, heatmap: np.ndarray | None, opacity: float) -> None:
    """The image and its heat-map overlay side by side (or a line saying what is missing)."""
    pdf = page.pdf
    pdf.ln(2)
    if pixels is None:
        page.line("(The image is not included in this report.)", 8)
        return
    from medclf_core.explain.render import overlay

    base = as_gray_or_rgb_uint8(pixels)
    pictures = [("Image", base)]
    if heatmap is not None:
        pictures.append((f"Heat map (opacity {number(opacity, 2)})", overlay(base, np.asarray(heatmap, np.float32),
                                                                             opacity=opacity)))
    top = bottom = pdf.get_y()
    for k, (caption, arr) in enumerate(pictures):
        x = pdf.l_margin + k * (_IMAGE_W + 10)
        im = _pil(arr)
        h = min(_IMAGE_W * im.height / im.width, 95.0)
        w = h * im.width / im.height
        pdf.image(im, x=x, y=top, w=w, h=h)
        pdf.set_xy(x, top + h + 0.5)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(_IMAGE_W, 4, latin1(caption))
        bottom = max(bottom, top + h + 5)
    if heatmap is None:
        pdf.set_xy(pdf.l_margin + _IMAGE_W + 10, top)
        pdf.set_font("Helvetica", "", 8)
        pdf.multi_cell(_IMAGE_W, 4, latin1("No heat map in this report."))
    pdf.set_xy(pdf.l_margin, bottom + 1)


def _decision(page: Page, result: Mapping, card, identifying: list[str]) -> None:
    """The verdict, then the headline (:func:`medclf_core.inference.results.headline`) with the rule behind
    it, the calibration in use and how else the probabilities were made (a refused image: its reason first,
    and the model's output only as what it output, not a finding)."""
    from medclf_core.inference.results import class_word, headline
    from medclf_core.registry.card_reading import finding_mimics
    from medclf_core.trust.calibration import calibration_in_use

    page.heading("Decision")
    ood, h = result.get("ood"), headline(result)
    if ood:
        reason = _scrub(result.get("ood_reason") or "the image does not look like the training images", identifying)
        page.line(f"Verdict: refused, OUT OF DISTRIBUTION: {reason}. Not a finding; below is only what the model "
                  "output.", 9.5, "B")
        page.line(f"Model output (not a finding): {class_word(result, result.get('label', 'n/a'))} "
                  f"({h.probability_text})", 10, "B")
    else:  # an unfamiliar image (issue 24's second tier) is a finding shown with its caution
        caution = result.get("unfamiliar") and _scrub(result.get("unfamiliar_reason") or "unfamiliar", identifying)
        page.line(f"Verdict: accepted with a caution, UNFAMILIAR: {caution}." if caution else
                  "Verdict: accepted (the image passed the out-of-distribution check)" if ood is False else
                  "Verdict: accepted, not checked for out-of-distribution images (this model has no gate).", 9.5, "B")
        page.line(f"Decision: {h.title}", 12, "B", 6)
        page.line(h.sentence, 9)
        if h.finding and (mimics := finding_mimics(card)):
            page.line(f"Known limit of this model: {mimics}", 9, "B")
    pos, threshold = result.get("positive_class"), result.get("threshold")
    page.line(f"Decision threshold: {percent(threshold)} (decision {class_word(result, pos)} when "
              f"P({class_word(result, pos)}) >= {percent(threshold)})."
              if threshold is not None and pos else "Decision rule: argmax (the most probable class; this model has "
              "no operating threshold).", 9)
    page.line(f"Calibration in use: {calibration_in_use(card)}.", 8.5)
    if extras := _how_made(result):
        page.line("; ".join(extras).capitalize() + ".", 8.5)
    if ood is False and not result.get("unfamiliar"):
        score = result.get("ood_score")
        page.line("Out-of-distribution check: passed, the image resembles the training images"
                  + (f" (score {float(score):.3g})" if isinstance(score, int | float) else "") + ".", 8.5)


def _heat_map_facts(page: Page, heat, result: Mapping) -> None:
    """What the heat map shows: method, target class and its faithfulness score with the verdict in words
    (``heat``: a :class:`~medclf_core.inference.results.HeatMap`; a bare array says only that it is a map)."""
    from medclf_core.explain.cams import METHOD_NAMES
    from medclf_core.inference.results import class_word

    if not hasattr(heat, "method"):  # no map, or a bare map: nothing known about it
        return
    page.heading("Heat map")
    page.rows([("Method", METHOD_NAMES.get(heat.method, str(heat.method))),
               ("Target class",
                f"{class_word(result, heat.class_name)} (red = regions that raised this class's score)"),
               ("Faithfulness", heat.faithfulness_caption.removeprefix("Faithfulness").lstrip(": ")
                + " Deletion test: the hottest regions blanked 10% at a time against random regions; "
                  "1 = the score falls at once, 0 = no better than random.")])


def _how_made(result: Mapping) -> list[str]:
    """Test-time views and ensemble size behind the probabilities, as phrases."""
    extras = []
    if result.get("tta"):
        extras.append("averaged over test-time views: " + ", ".join(str(v) for v in result["tta"]))
    if result.get("ensemble"):
        extras.append(f"seed ensemble of {int(result['ensemble'])} models")
    return extras


def _probabilities_of(result: Mapping) -> dict[str, float]:
    return {str(k): float(v) for k, v in (result.get("probabilities") or {}).items()}


def _probabilities(page: Page, result: Mapping) -> None:
    """One bar per class (the output's in bold), with the threshold marked in red on the positive class."""
    from medclf_core.inference.results import class_word

    page.heading("Class probabilities")
    pdf = page.pdf
    pos, threshold = result.get("positive_class"), result.get("threshold")
    bar_w = page.width - 75
    for name, p in _probabilities_of(result).items():
        page.room(5)  # a bar and its name on one page
        pdf.set_font("Helvetica", "B" if name == result.get("label") else "", 9)
        y = pdf.get_y()
        pdf.cell(50, 5, latin1(class_word(result, name)))
        pdf.cell(20, 5, probability_text(p), align="R")
        x0 = pdf.get_x() + 4
        pdf.set_fill_color(220, 220, 220)
        pdf.rect(x0, y + 1, bar_w, 3, style="F")
        pdf.set_fill_color(40, 90, 170)
        pdf.rect(x0, y + 1, max(0.2, bar_w * min(max(p, 0.0), 1.0)), 3, style="F")
        if threshold is not None and name == pos:
            pdf.set_draw_color(200, 0, 0)
            pdf.line(x0 + bar_w * float(threshold), y + 0.2, x0 + bar_w * float(threshold), y + 4.8)
            pdf.set_draw_color(0, 0, 0)
        pdf.set_xy(pdf.l_margin, y + 5)
    if threshold is not None and pos:
        page.line(f"The red mark on the {class_word(result, pos)} bar is the threshold.", 7.5)


def write_reports(predictor, results: Sequence[dict], out_dir: str | os.PathLike, *, method: str = "gradcam",
                  opacity: float = OVERLAY_OPACITY, decoded: Mapping | None = None, explanations: Mapping | None = None
                  ) -> list[Path]:
    """One report per readable result of ``predictor.predict_files`` in ``out_dir``; each result gets
    ``"report"`` (its PDF's path). Without a heat map (the model has none) the report says so; a file
    whose report cannot be made gets ``"report_error"``.

    What the caller already has is used, not made again: ``decoded`` (``{index: DecodedImage}``, as
    ``predict_files(decoded=...)`` fills it) and ``explanations`` (``{index: explanation or None}``:
    the result of :meth:`~medclf_core.inference.predictor.Predictor.explain` for that image, None for
    no map). A result missing from them is decoded here, and explained here with ``method``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decoded, explanations = decoded or {}, explanations or {}
    written: list[Path] = []
    for k, r in enumerate(results):
        if "error" in r:
            continue
        try:
            img = decoded[k] if k in decoded else load_image(r["file"])
            values = list(img.dicom.identifying) if img.dicom is not None else []  # the one parse
            ex = explanations[k] if k in explanations else _explain_one(predictor, img, method)
            target = write_report(r, img.pixels, ex, predictor.card,
                                  out_dir / report_file_name(r["file"], values, prefix=f"{k:03d}_"),
                                  identifying=values, opacity=opacity)
        except Exception as exc:  # noqa: BLE001 - one report that fails never stops the others
            r["report_error"] = f"The report could not be written ({type(exc).__name__})."
            continue
        r["report"] = str(target)
        written.append(target)
    return written


def _explain_one(predictor, img, method: str):
    """The predicted class's map of one decoded image, scored (faithfulness), or None without a heat map."""
    try:
        return predictor.explain([img], method, faithfulness=True)[0]
    except Exception:  # noqa: BLE001 - no heat map for this model: the report says so
        return None


def report_file_name(file: str | os.PathLike, identifying: Iterable[str] = (), *, prefix: str = "") -> str:
    """``<prefix><de-identified stem>_report.pdf`` for the image ``file``: the one output-name rule,
    :func:`medclf_core.io.deid.safe_file_stem` (``predict --cam`` names its maps by it too)."""
    return f"{prefix}{safe_file_stem(file, identifying)}_report.pdf"


def _card_facts(c) -> list[tuple[str, str]]:
    facts = [("Name", c.name), ("Task", c.task or "not stated"), ("Classes", c.classes_text),
             ("Architecture", c.architecture or "not stated"),
             ("Input", " x ".join(str(v) for v in c.input_shape or []) or "not stated")]
    on = "cross-validated" if c.is_cross_validated else f"{(c.metrics or {}).get('split') or 'test'} split"
    site = c.get("site_calibration") or {}
    for key, title in (("accuracy", "Accuracy"), ("auc", "ROC-AUC"), ("sensitivity", "Sensitivity"),
                       ("specificity", "Specificity")):
        if c.metric(key) is not None:
            at = _measured_at(site, key)
            facts.append((f"{title} ({on}{at})", c.format_metric(key)))
    facts.append(("Figures computed on", c.figures_source if c.test_n is not None else "not recorded"))
    if c.threshold is not None:
        facts.append(_threshold_fact(c, site))
    use = c.get("intended_use")
    if isinstance(use, dict) and use:
        facts.append(("Intended use", str(use.get("summary") or "not stated")))
        if use.get("modalities") or use.get("body_parts"):
            facts.append(("Modalities / body parts", (", ".join(map(str, use.get("modalities") or [])) or "any")
                          + " / " + (", ".join(map(str, use.get("body_parts") or [])) or "any")))
        if use.get("population"):
            facts.append(("Population", str(use["population"])))
        if use.get("not_for"):
            facts.append(("Not for", ", ".join(map(str, use["not_for"]))
                          if isinstance(use["not_for"], list) else str(use["not_for"])))
    else:
        facts.append(("Intended use", "not stated in the model card"))
    facts.append(("Figures", "from the model's own held-out split of its training data; expect lower figures "
                             "on images from other hospitals"))
    if c.created:
        facts.append(("Model created", str(c.created)[:19].replace("T", " ")))
    return facts


def _measured_at(site, key: str) -> str:
    """With a site's calibration in use, where a threshold-dependent card figure was measured: at the card's own
    threshold, not the site's (empty without a site, or for ROC-AUC, which has no threshold)."""
    if not site or key == "auc":
        return ""
    card_thr = site.get("card_threshold")
    return f", at the model card's threshold{' ' + percent(card_thr) if card_thr is not None else ''}, not the site's"


def _threshold_fact(c, site) -> tuple[str, str]:
    """The operating threshold in use, named by whose it is: a site's (its name and rule) or the card's (method)."""
    text = f"{percent(c.threshold)} on P({c.class_word(c.positive_class)})"
    if site:
        rule = (c.get("threshold_rule") or {}).get("chosen_for")
        return (f"Operating threshold (site '{site.get('site')}')",
                text + ", the site's own calibration" + (f": {rule}" if rule else "")
                + (f" ({site['check']})" if site.get("check") else ""))
    return "Operating threshold", text + (f" ({c.get('threshold_method')})" if c.get("threshold_method") else "")


def _scrub(text: str, identifying: list[str]) -> str:
    return redact(str(text), identifying) if identifying else str(text)


def _pil(arr: np.ndarray):
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(arr))
    if max(im.size) > _MAX_IMAGE_SIDE:
        im.thumbnail((_MAX_IMAGE_SIDE, _MAX_IMAGE_SIDE))
    return im
