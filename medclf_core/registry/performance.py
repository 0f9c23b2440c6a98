"""A model's performance table: its own held-out figures beside those recorded on other data.

One row per source (the run's test split first, then each evaluation recorded with
``evaluate --record``), each figure with its interval and ``n`` as
:func:`medclf_core.formatting.metric_with_n` prints it, so a figure on fewer than 30 images
says so. The Predict and Models pages and the reports show these rows as they are.
"""

from __future__ import annotations

from medclf_core.formatting import metric_with_n
from medclf_core.registry.card import ModelCard, figure_n
from medclf_core.registry.evaluations import list_evaluations
from medclf_core.registry.validation import is_whole_number

PERFORMANCE_METRICS = (("accuracy", "accuracy"), ("AUC", "auc"), ("sensitivity", "sensitivity"),
                       ("specificity", "specificity"), ("ECE", "ece"))


def performance_rows(card: ModelCard, evaluations: list[dict] | None = None) -> list[dict]:
    """Same-source and other-source figures side by side, each with its n: one row per evaluation.

    ``evaluations`` default to the run's recorded ones (:func:`list_evaluations`).

    Example::

        >>> card = ModelCard.from_dict({"name": "m", "class_names": ["a", "b"],
        ...                             "metrics": {"n": 12, "accuracy": 1.0, "ci95": {"accuracy": [1.0, 1.0]}}})
        >>> performance_rows(card, [])[0]["accuracy"]
        '1.000 (n = 12, too few images for a reliable figure)'
    """
    own = "own cross-validation" if card.is_cross_validated else "own test split"
    n_groups = card["metrics"].get("n_groups")  # its intervals resampled patients and near-duplicate groups
    groups = f", {n_groups} patients or groups" if is_whole_number(n_groups) else ""
    rows = [{"data": f"{own} ({(card.dataset or {}).get('name') or 'training source'}, same source{groups})",
             "n": card.test_n,
             **{label: card.format_metric(key) for label, key in PERFORMANCE_METRICS}}]
    if evaluations is None:
        evaluations = list_evaluations(card.run_dir) if card.run_dir else []
    for e in evaluations:
        groups = f", {e['n_groups']} patients or cases" if is_whole_number(e.get("n_groups")) else ""
        rows.append({"data": f"{e.get('dataset')} (other data, {str(e.get('date') or '')[:10]}{groups})",
                     "n": e.get("n"), **evaluation_figures(e)})
    return rows


def evaluation_figures(record: dict) -> dict[str, str]:
    """One recorded evaluation's figures as the tables print them, each with its interval and its own n (a
    sensitivity's n is the positive images, a specificity's the others; :func:`~medclf_core.registry.card.figure_n`).

    >>> evaluation_figures({"n": 87, "n_per_class": {"no": 41, "yes": 46}, "positive_class": "yes",
    ...                     "metrics": {"sensitivity": 0.913}, "ci95": {}})["sensitivity"]
    '0.913 (n = 46)'
    """
    ci = record.get("ci95") or {}
    return {label: metric_with_n((record.get("metrics") or {}).get(key), ci.get(key),
                                 figure_n(key, record.get("n"), record.get("n_per_class"), record.get("positive_class")))
            for label, key in PERFORMANCE_METRICS}
