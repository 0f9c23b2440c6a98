"""What a run's training chart shows: its per-epoch curves, or what a cross-validated head fit has instead.

A run on few images (:mod:`medclf_core.training.crossfit`) fits its head by cross-validation: its history is one
record with no accuracy or loss per epoch, and :func:`~medclf_core.reports.plots.training_curves` of it would be
empty axes. :func:`run_curves` gives that run the out-of-fold log-loss of each regularisation strength tried (the
card's ``recipe.cross_validated_head``) with a sentence saying why there are no epoch curves; a sentence alone when
the card is not at hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from medclf_core.formatting import is_number
from medclf_core.reports.plots import PALETTE, training_curves

CURVE_KEYS = ("accuracy", "loss", "val_accuracy", "val_loss")
NO_EPOCH_CURVES = "This run recorded no accuracy or loss per epoch, so there are no training curves to show."


def has_epoch_curves(history) -> bool:
    """Whether a history (``history.json``, or the Train page's events) holds any per-epoch accuracy or loss.

    >>> has_epoch_curves([{"epoch": 0, "loss": 0.6}]), has_epoch_curves([{"epoch": 0, "cv_log_loss": 0.16}])
    (True, False)
    """
    return isinstance(history, Sequence) and any(
        isinstance(h, Mapping) and any(is_number(h.get(k)) for k in CURVE_KEYS) for h in history)


def _is_cross_validated(history) -> bool:
    return isinstance(history, Sequence) and any(
        isinstance(h, Mapping) and (h.get("phase") == "cross_validation" or "cv_log_loss" in h) for h in history)


def cross_validation_text(summary: Mapping | None) -> str:
    """Why a cross-validated head fit has no epoch curves, and what its chart shows instead.

    >>> cross_validation_text({"C": 0.0316, "folds": 5, "cv_log_loss": {"0.01": 0.17, "0.0316": 0.16}})[:60]
    'This recipe fits its head on every labelled image, choosing '
    """
    folds = (summary or {}).get("folds")
    text = ("This recipe fits its head on every labelled image, choosing its regularisation by "
            + (f"{folds}-fold " if folds else "") + "cross-validation (used below "
            "a few hundred images): it trains no epochs, so there are no accuracy or loss curves.")
    if _cv_points(summary):
        text += (" The chart shows the out-of-fold log-loss of each regularisation strength C tried (lower is "
                 f"better); C = {summary['C']:.3g} was kept.")
    return text


def _cv_points(summary: Mapping | None) -> list[tuple[float, float]]:
    """``(C, out-of-fold log-loss)`` pairs of a ``cross_validated_head`` card entry, by C; [] when unreadable."""
    losses = (summary or {}).get("cv_log_loss")
    if not isinstance(losses, Mapping) or not is_number((summary or {}).get("C")):
        return []
    points = []
    for c, v in losses.items():
        try:
            points.append((float(c), float(v)))
        except (TypeError, ValueError):
            return []
    return sorted(p for p in points if is_number(p[0]) and p[0] > 0 and is_number(p[1]))


def cross_validation_figure(summary: Mapping, *, height: int = 340) -> go.Figure:
    """Out-of-fold log-loss against the regularisation strength C (log axis), the kept C marked."""
    points = _cv_points(summary)
    chosen = float(summary["C"])
    fig = go.Figure(go.Scatter(x=[c for c, _ in points], y=[v for _, v in points], mode="lines+markers",
                               name="out-of-fold log-loss", line=dict(color=PALETTE[0])))
    kept = min(points, key=lambda p: abs(p[0] - chosen))
    fig.add_trace(go.Scatter(x=[kept[0]], y=[kept[1]], mode="markers", name=f"kept: C = {chosen:.3g}",
                             marker=dict(color=PALETTE[4], size=12, symbol="diamond")))
    fig.update_xaxes(type="log", title_text="regularisation strength C (larger: weaker)")
    fig.update_yaxes(title_text="out-of-fold log-loss", rangemode="tozero")
    return fig.update_layout(height=height, template="plotly_white", margin=dict(l=10, r=10, t=40, b=10),
                             title=dict(text="cross-validation of the head (no epochs)"),
                             legend=dict(orientation="h", x=0, y=-0.3))


def run_curves(history, card: Mapping | None = None, *, height: int = 340) -> tuple[go.Figure | None, str | None]:
    """``(figure, sentence)`` for a run's training chart: its epoch curves and no sentence; for a
    cross-validated head, its cross-validation chart (from the run's ``card``, when given) and why there are no
    epoch curves; a sentence alone for any other history without curves; ``(None, None)`` for no history."""
    recipe = card.get("recipe") if isinstance(card, Mapping) else None
    cross_validated_head = recipe.get("cross_validated_head") if isinstance(recipe, Mapping) else None
    if has_epoch_curves(history):
        return training_curves(history, height=height), None
    if cross_validated_head or _is_cross_validated(history):
        figure = cross_validation_figure(cross_validated_head, height=height) if _cv_points(
            cross_validated_head) else None
        return figure, cross_validation_text(cross_validated_head)
    return None, (NO_EPOCH_CURVES if history else None)
