"""Plotly figures for the app (and notebooks): no Streamlit here.

- :func:`probability_bars`: class probabilities of one image, the predicted class highlighted,
  the operating threshold drawn for a binary model.
- :func:`training_curves`: accuracy and loss per epoch (train and val), for one run or overlaid runs.
- :func:`confusion_matrix_figure`: heat map of counts or row-normalised rates.
- :func:`roc_figure`: ROC curves with AUC and the operating point.
- :func:`reliability_figure`: the reliability diagram (accuracy against confidence per bin) with the ECE.
- :func:`risk_coverage_figure`: accuracy against coverage when images are deferred (selective prediction).

Example::

    >>> fig = probability_bars({"NORMAL": 0.2, "PNEUMONIA": 0.8}, threshold=0.5, positive="PNEUMONIA")
    >>> fig.data[0].type
    'bar'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medclf_core.formatting import MIN_RELIABLE_N, percent, probability_text
from medclf_core.registry.card_reading import class_word

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
HIGHLIGHT, MUTED = "#d62728", "#9aa5b1"
DECIDED_NOT_FINDING = "#1f77b4"  # the decided class when it is not the positive class (no finding): not red


def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      title=dict(text=title) if title else None, template="plotly_white")
    return fig


LEGEND_ROW_PX = 22
_LEGEND_ASSUMED_WIDTH_PX = 560  # the narrowest a figure is drawn in the app (a half-width column)


def _legend_below(fig: go.Figure, height: int, axis_px: int = 60) -> int:
    """Put the legend under the plot, in the figure's own (container) coordinates, and make room for it.

    A legend placed at a negative paper y moves with the plot area: when plotly expands the
    margin for it the plot shrinks, the legend rises into the x-axis title, and a long
    legend (several runs compared) is cut off. Here the bottom margin holds the axis title
    and every legend row (estimated from the entries' lengths), and the figure grows by the
    legend's rows so the plot keeps its size. Returns the new height.
    """
    names = [t.name for t in fig.data if t.name and t.showlegend is not False]
    widths = [40 + 7 * len(n) for n in names]
    rows, used = (1 if widths else 0), 0
    for w in widths:
        if used and used + w > _LEGEND_ASSUMED_WIDTH_PX:
            rows, used = rows + 1, 0
        used += w
    legend_px = rows * LEGEND_ROW_PX
    height += legend_px
    fig.update_layout(height=height, legend=dict(orientation="h", x=0, xanchor="left", y=0, yanchor="bottom",
                                                 yref="container"),
                      margin=dict(b=axis_px + legend_px))
    return height


#: Below this probability a bar is too short to hold its label inside: the label goes beside it (Plotly draws no
#: label at all for a bar it places "auto" and that is too short to be drawn, such as 2.6e-6).
LABEL_OUTSIDE_BELOW = 0.15


def probability_bars(probabilities: Mapping[str, float], *, label: str | None = None, threshold: float | None = None,
                     positive: str | None = None, height: int | None = None, refused: bool = False,
                     class_labels: Mapping[str, str] | None = None) -> go.Figure:
    """Horizontal bars, one per class (0-100 %), each labelled with its capped probability
    (:func:`medclf_core.formatting.probability_text`); ``label`` (the decision; default: the most probable)
    highlighted. Red marks a finding only: the ``positive`` class when it is the decision. A decision for
    another class (NORMAL below the threshold), or any decision of a model without a positive class (a
    multi-class model), is drawn in a calm colour, never red, whatever its probability. ``refused``: the
    output on an image the model refused (not a finding): every bar the same neutral grey. ``class_labels``: the
    card's plain words for the classes, shown in place of the names ("tumour" for "yes")."""
    names = list(probabilities)
    values = [float(probabilities[n]) for n in names]
    label = label if label in names else (names[int(np.argmax(values))] if names else None)
    decided = HIGHLIGHT if positive in names and label == positive else DECIDED_NOT_FINDING
    shown = [probability_text(v) for v in values]
    words = {n: class_word(class_labels, n) for n in names}
    fig = go.Figure(go.Bar(
        x=[v * 100 for v in values], y=[words[n] for n in names], orientation="h",
        marker_color=[decided if n == label and not refused else MUTED for n in names],
        text=shown, textposition=["outside" if v < LABEL_OUTSIDE_BELOW else "auto" for v in values],
        customdata=shown, hovertemplate="%{y}: %{customdata}<extra></extra>"))
    fig.update_xaxes(range=[0, 100], title_text="probability (%)")
    fig.update_yaxes(autorange="reversed")
    if threshold is not None and positive in names:
        # on the finding class's bar only: the threshold is on P(finding), and a line through the other bars
        # read as a threshold for them too
        row, x = names.index(positive), threshold * 100
        fig.add_shape(type="line", x0=x, x1=x, y0=row - 0.45, y1=row + 0.45, xref="x", yref="y",
                      line=dict(dash="dash", color="black"))
        fig.add_annotation(x=x, y=1, xref="x", yref="paper", yanchor="bottom", showarrow=False,
                           text=f"threshold for {words[positive]}: {percent(threshold)}")
        # the label sits above the plot area: the top margin (10 px otherwise) must hold it
        _layout(fig, (height or (90 + 40 * max(1, len(names)))) + 24)
        return fig.update_layout(margin=dict(t=34))
    return _layout(fig, height or (90 + 40 * max(1, len(names))))


def _series(history: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, h in enumerate(history):
        v = h.get(key)
        if v is None or not np.isfinite(v):
            continue
        epoch = h.get("epoch", i)
        xs.append(int(epoch))
        ys.append(float(v))
    return xs, ys


def _epoch_base(history: Sequence[Mapping]) -> int:
    """history.json counts epochs from 0, job events from 1: show both from 1."""
    epochs = [h.get("epoch") for h in history if h.get("epoch") is not None]
    return 1 if epochs and min(epochs) == 0 else 0


def _by_member(run: str, history: Sequence[Mapping]) -> dict[str, list]:
    """A seed ensemble's history (records tagged ``member``) as one history per member."""
    members = sorted({h["member"] for h in history if h.get("member") is not None})
    if not members:
        return {run: list(history)}
    return {f"{run} model {m}".strip(): [h for h in history if h.get("member") == m] for m in members}


TRAIN_COLOUR, VAL_COLOUR = PALETTE[0], PALETTE[4]  # one run: blue train, orange validation


def _tint(colour: str, amount: float = 0.5) -> str:
    """``colour`` (``#rrggbb``) mixed with white: a lighter shade of it.

    >>> _tint("#000000"), _tint("#1f77b4", 0.0)
    ('#808080', '#1f77b4')
    """
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def curve_colours(k: int, runs: int) -> tuple[str, str]:
    """(train, validation) colours of the ``k``-th of ``runs`` overlaid runs: never the same colour. One run:
    blue and orange; several: the run's own colour for train and a lighter shade of it for validation.

    >>> curve_colours(0, 1)
    ('#1f77b4', '#ff7f0e')
    >>> curve_colours(1, 2)
    ('#d62728', '#ea9394')
    """
    if runs <= 1:
        return TRAIN_COLOUR, VAL_COLOUR
    colour = PALETTE[k % len(PALETTE)]
    return colour, _tint(colour)


def training_curves(histories: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], *, height: int = 340) -> go.Figure:
    """Accuracy (left) and loss (right) per epoch; solid train, dashed val, in different colours
    (:func:`curve_colours`).

    ``histories`` is one history (a list of per-epoch dicts with loss, accuracy,
    val_loss, val_accuracy) or ``{run name: history}`` to overlay runs.
    """
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    histories = {name: h for run, history in histories.items() for name, h in _by_member(run, history).items()}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"), horizontal_spacing=0.1)
    for k, (run, history) in enumerate(histories.items()):
        colours = dict(zip(("train", "val"), curve_colours(k, len(histories)), strict=True))
        shift = _epoch_base(history)
        for col, metric in ((1, "accuracy"), (2, "loss")):
            for key, dash, kind in ((metric, "solid", "train"), (f"val_{metric}", "dash", "val")):
                xs, ys = _series(history, key)
                if not xs:
                    continue
                name = f"{run} {kind}".strip()
                fig.add_trace(go.Scatter(x=[x + shift for x in xs], y=ys, mode="lines+markers", name=name,
                                         legendgroup=name, showlegend=(col == 1),
                                         line=dict(color=colours[kind], dash=dash)), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1 if max((len(h) for h in histories.values()), default=0) <= 15 else None)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    _layout(fig, height)
    _legend_below(fig, height)
    fig.update_layout(margin=dict(t=40))  # room for the subplot titles
    return fig


def normalise_rows(cm) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def confusion_matrix_figure(cm, class_names: Sequence[str], *, normalised: bool = False, height: int | None = None,
                            title: str | None = None) -> go.Figure:
    """Heat map, rows = true class, columns = predicted class; counts or row-normalised rates."""
    counts = np.asarray(cm, dtype=np.int64)
    z = normalise_rows(counts) if normalised else counts
    text = [[f"{z[i, j]:.0%}<br>({counts[i, j]})" if normalised else f"{counts[i, j]}" for j in range(z.shape[1])]
            for i in range(z.shape[0])]
    names = list(class_names)
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues",
                               zmin=0, zmax=1 if normalised else max(1, int(counts.max(initial=0))),
                               showscale=False,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"))
    fig.update_xaxes(title_text="predicted class", side="bottom", type="category")
    fig.update_yaxes(title_text="true class", autorange="reversed", type="category")
    return _layout(fig, height or (140 + 60 * len(names)), title)


def roc_figure(roc: Mapping[str, Mapping], *, auc: float | None = None,
               operating_point: tuple[float, float] | None = None, height: int = 380) -> go.Figure:
    """ROC curves (``evaluation.roc_points`` output), the chance line, and the operating point (fpr, tpr)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbbbbb", dash="dot"),
                             name="chance", hoverinfo="skip"))
    for k, (name, pts) in enumerate(roc.items()):
        label = name if auc is None or len(roc) > 1 else f"{name} (AUC {auc:.3f})"
        fig.add_trace(go.Scatter(x=pts["fpr"], y=pts["tpr"], mode="lines", name=label,
                                 line=dict(color=PALETTE[k % len(PALETTE)], width=2),
                                 customdata=pts.get("thresholds"),
                                 hovertemplate="FPR %{x:.2f}, TPR %{y:.2f}<br>threshold %{customdata:.2f}<extra></extra>"))
    if operating_point is not None:
        fig.add_trace(go.Scatter(x=[operating_point[0]], y=[operating_point[1]], mode="markers", name="threshold",
                                 marker=dict(size=12, color="black", symbol="x")))
    title = f"ROC (AUC {auc:.3f})" if auc is not None else "ROC"
    fig.update_xaxes(title_text="1 - specificity (false positive rate)", range=[0, 1])
    fig.update_yaxes(title_text="sensitivity (true positive rate)", range=[0, 1.02])
    fig.update_layout(legend=dict(x=0.55, y=0.05))
    return _layout(fig, height, title)


def reliability_figure(y_true, probs, *, n_bins: int = 15, height: int = 380, title: str | None = None) -> go.Figure:
    """Reliability diagram: per equal-width confidence bin, the accuracy of the top class (bars) against
    the mean confidence (the diagonal is perfect calibration), and the share of images per bin; the
    expected calibration error is in the title."""
    from medclf_core.trust.calibration import expected_calibration_error, reliability_bins

    bins = reliability_bins(y_true, probs, n_bins)
    edges = np.asarray(bins["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    total = max(1, sum(bins["count"]))
    filled = [i for i, n in enumerate(bins["count"]) if n]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbbbbb", dash="dot"),
                             name="perfect calibration", hoverinfo="skip"))
    fig.add_trace(go.Bar(x=[centres[i] for i in filled], y=[bins["accuracy"][i] for i in filled],
                         width=(edges[1] - edges[0]) * 0.9, name="accuracy", marker_color=PALETTE[0],
                         customdata=[[bins["confidence"][i], bins["count"][i]] for i in filled],
                         hovertemplate="confidence %{customdata[0]:.2f}<br>accuracy %{y:.2f}<br>"
                                       "%{customdata[1]} images<extra></extra>"))
    fig.add_trace(go.Scatter(x=[bins["confidence"][i] for i in filled], y=[bins["confidence"][i] for i in filled],
                             mode="markers", name="mean confidence", marker=dict(color="black", symbol="line-ew-open",
                                                                                 size=14)))
    fig.add_trace(go.Bar(x=[centres[i] for i in filled], y=[bins["count"][i] / total for i in filled],
                         width=(edges[1] - edges[0]) * 0.9, name="share of images", marker_color=MUTED,
                         opacity=0.5, hovertemplate="%{y:.0%} of the images<extra></extra>"))
    ece = expected_calibration_error(y_true, probs, n_bins)
    fig.update_xaxes(title_text="confidence (probability of the predicted class)", range=[0, 1])
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02])
    fig.update_layout(barmode="overlay")
    label = title or "Reliability"
    _layout(fig, height, f"{label} (ECE {ece:.3f})" if ece is not None else label)
    _legend_below(fig, height)
    return fig


def risk_coverage_figure(selective: Mapping, ordering: str = "confidence", *, height: int = 380) -> go.Figure:
    """Accuracy against coverage (``evaluate``'s ``"selective"`` entry, one ordering): the curve, the
    best possible ordering (errors deferred first), the table's coverages as markers and, when images
    were refused, the coverage at which every refused image has been deferred; the AURC in the title."""
    o = (selective.get("orderings") or {}).get(ordering)
    fig = go.Figure()
    if not o or not o["curve"]["coverage"]:
        fig.add_annotation(text="No curve: no images, or no score for this ordering.", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
        return _layout(fig, height, "Accuracy against coverage")
    c, n = o["curve"], selective["n"]
    right = c["accuracy"][-1] * n  # correct answers over every image: the oracle keeps them last
    fig.add_trace(go.Scatter(x=c["coverage"], y=[min(1.0, right / k) for k in c["n_kept"]], mode="lines",
                             name="best possible ordering", line=dict(color="#bbbbbb", dash="dot"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=c["coverage"], y=c["accuracy"], mode="lines", name=f"deferring the {o['label']}",
                             line=dict(color=PALETTE[0], width=2), customdata=c["n_kept"],
                             hovertemplate="coverage %{x:.0%} (%{customdata} images)<br>accuracy %{y:.3f}"
                                           "<extra></extra>"))
    rows = [r for r in o["table"] if r["accuracy"] is not None]
    fig.add_trace(go.Scatter(x=[r["coverage"] for r in rows], y=[r["accuracy"] for r in rows], mode="markers",
                             name="coverage 100/95/90/80%", marker=dict(size=9, color="black"),
                             customdata=[r["n_kept"] for r in rows],
                             hovertemplate="coverage %{x:.0%} (%{customdata} images)<br>accuracy %{y:.3f}"
                                           "<extra></extra>"))
    if selective.get("n_refused"):
        fig.add_vline(x=selective["accepted_coverage"], line=dict(color=HIGHLIGHT, dash="dash"),
                      annotation_text=f"{selective['n_refused']} refused deferred", annotation_position="top left")
    fig.update_xaxes(title_text="coverage (share of all images the model answers)", range=[0, 1.02],
                     tickformat=".0%")
    shown = [float(v) for t in fig.data for v in (t.y if t.y is not None else ()) if v is not None]
    # a range of its own: plotly's default ran from 0 to 2 when every answer was right (walk-through, session 21)
    fig.update_yaxes(title_text="accuracy of the answered images", range=[max(0.0, min(shown, default=0.0) - 0.05),
                                                                          1.02])
    _layout(fig, height, f"Accuracy against coverage (AURC {o['aurc']:.3f}, lower is better)")
    _legend_below(fig, height)
    return fig


def metrics_table(metrics: Mapping) -> list[dict]:
    """Rows ``{"metric", "value", "95% interval"}`` for a metrics dict (evaluation or card summary).

    With fewer than :data:`~medclf_core.formatting.MIN_RELIABLE_N` images (``metrics["n"]``) no interval is
    shown, a note is (the rule of :func:`~medclf_core.formatting.metric_with_n`).

    >>> metrics_table({"accuracy": 1.0, "ci95": {"accuracy": [1.0, 1.0]}, "n": 12})[0]["95% interval"]
    'none: too few images (n = 12)'
    """
    ci = metrics.get("ci95") or {}
    n = metrics.get("n")
    few = isinstance(n, int) and not isinstance(n, bool) and n < MIN_RELIABLE_N
    rows = []
    for key, label in (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("auc", "ROC-AUC"),
                       ("macro_f1", "Macro F1"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                       ("threshold", "Threshold"), ("n", "Images")):
        v = metrics.get(key)
        if v is None:
            continue
        interval = ci.get(key)
        shown = f"{interval[0]:.3f} - {interval[1]:.3f}" if interval else ""
        if interval and f"{interval[0]:.3f}" == f"{interval[1]:.3f}":  # every resample alike (e.g. all right):
            shown = ""  # no interval rather than a zero-width one (formatting.metric_with_n's rule)
        rows.append({"metric": label, "value": (f"{v:.3f}" if isinstance(v, float) else str(v)),
                     "95% interval": f"none: too few images (n = {n})" if few and key not in ("n", "threshold")
                     else shown})
    return rows
