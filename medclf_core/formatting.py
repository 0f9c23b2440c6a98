"""Numbers as people read them: the one formatter for figures shown in the app, the CLI and reports.

Every figure goes through here so that the same value prints the same way everywhere:
``n/a`` for a missing or non-finite value, no ``-0.00``, and a metric with too few images
behind it says so instead of showing an interval that looks precise.

    >>> number(0.96412), number(0.4173, digits=2), number(None)
    ('0.964', '0.42', 'n/a')
    >>> percent(0.9641), probability_text(0.9996), probability_text(0.62)
    ('96.4%', '>99%', '62.0%')
    >>> metric_with_n(0.964, ci=(0.951, 0.977), n=779)
    '0.964 (95% CI 0.951-0.977, n = 779)'

Imports nothing from medclf (layer 0: every other layer may use it).
"""

from __future__ import annotations

import math
import numbers

MIN_RELIABLE_N = 30  # below this many test images a metric is shown with a warning
# The split a cross-validated (small-data) run's figures come from (training/crossfit.py): out-of-fold predictions
# of every labelled image, recorded as the card's metrics["split"] and evaluation.json's "split".
CROSS_VALIDATION = "cross-validation (out-of-fold)"
NOT_AVAILABLE = "n/a"


def is_number(value) -> bool:
    """A finite real number (Python or NumPy); ``True``/``False`` are not numbers here.

    >>> is_number(0.5), is_number(3), is_number(True), is_number(float("nan")), is_number("0.5")
    (True, True, False, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def number(value, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` when it is not a finite number.

    A value that rounds to zero prints without a minus sign (``-0.0012`` is ``0.00``,
    never ``-0.00``).

    >>> number(0.85), number(-0.0012, digits=2), number(float("inf"))
    ('0.850', '0.00', 'n/a')
    """
    if not is_number(value):
        return NOT_AVAILABLE
    return f"{round(float(value), digits) + 0.0:.{digits}f}"  # + 0.0 turns -0.0 into 0.0


def percent(value, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals; ``n/a`` when it is not a finite number.

    >>> percent(0.5), percent(1), percent(0.12345, digits=2), percent(None)
    ('50.0%', '100.0%', '12.35%', 'n/a')
    """
    if not is_number(value):
        return NOT_AVAILABLE
    return f"{float(value):.{digits}%}"


PROBABILITY_CAP = 0.01  # a probability shown to a clinician reads ">99%" above 1 - this, "<1%" below it


def probability_text(value, digits: int = 1) -> str:
    """A probability as shown to a clinician: a percentage, capped at ``>99%`` and ``<1%``.

    A model's probability is never certainty: ``100.0%`` or ``0.0%`` (what a near-saturated,
    calibrated output prints) would claim more than a model can know, and the digits past 99% mean
    nothing at the precision calibration reaches. Values above ``1 - PROBABILITY_CAP`` read ``>99%``,
    below ``PROBABILITY_CAP`` read ``<1%``; the rest as :func:`percent`. Only for display: the JSON and
    CSV exports keep the exact numbers.

    >>> probability_text(0.995), probability_text(0.005), probability_text(0.99), probability_text(0.01)
    ('>99%', '<1%', '99.0%', '1.0%')
    >>> probability_text(None)
    'n/a'
    """
    if not is_number(value):
        return NOT_AVAILABLE
    if value > 1.0 - PROBABILITY_CAP:
        return ">99%"
    if value < PROBABILITY_CAP:
        return "<1%"
    return percent(value, digits)


def probability_of(name: str, value, digits: int = 1) -> str:
    """``P(name) = 62.0%``, or ``P(name) > 99%`` / ``P(name) < 1%``: a class's probability as shown to a person
    (:func:`probability_text`), in every headline, reason and caption that names the class.

    >>> probability_of("CT", 0.92), probability_of("CT", 0.9996), probability_of("head", 0.003)
    ('P(CT) = 92.0%', 'P(CT) > 99%', 'P(head) < 1%')
    """
    text = probability_text(value, digits)
    return f"P({name}) " + (f"{text[0]} {text[1:]}" if text[0] in "<>" else f"= {text}")


def rounded(value, digits: int = 3):
    """A float rounded to ``digits`` decimals, anything else as it is: for tables that stay sortable.

    >>> rounded(0.85312), rounded(12), rounded(None)
    (0.853, 12, None)
    """
    return round(value, digits) if isinstance(value, float) else value


def metric_with_n(value, ci=None, n=None, *, pct: bool = False) -> str:
    """A figure with its 95% interval and ``n``: ``0.964 (95% CI 0.951-0.977, n = 779)``.

    With ``n`` below :data:`MIN_RELIABLE_N` the interval is left out and a warning takes its
    place. An interval whose ends print the same is never shown (no ``1.000 (1.000-1.000)``).
    ``pct`` prints percentages instead of fractions.

    >>> metric_with_n(1.0, ci=(1.0, 1.0), n=12)
    '1.000 (n = 12, too few images for a reliable figure)'
    >>> metric_with_n(0.905, ci=(0.9051, 0.9052), n=34), metric_with_n(0.9, pct=True), metric_with_n(None, n=40)
    ('0.905 (n = 34)', '90.0%', 'n/a')
    """
    if not is_number(value):
        return NOT_AVAILABLE

    def text_of(v) -> str:
        return percent(v) if pct else number(v)

    text = text_of(value)
    has_n = isinstance(n, int) and not isinstance(n, bool)
    if has_n and n < MIN_RELIABLE_N:
        return f"{text} (n = {n}, too few images for a reliable figure)"
    parts = []
    if ci is not None and len(ci) == 2 and all(is_number(v) for v in ci) and text_of(ci[0]) != text_of(ci[1]):
        parts.append(f"95% CI {text_of(ci[0])}-{text_of(ci[1])}")
    if has_n:
        parts.append(f"n = {n}")
    return text + (f" ({', '.join(parts)})" if parts else "")


def too_few_images(n) -> str | None:
    """The warning shown beside figures that rest on ``n`` test images, when that is fewer than
    :data:`MIN_RELIABLE_N` (or unknown); None when ``n`` is enough. The rule :func:`metric_with_n` follows.

    >>> too_few_images(12)
    'These figures rest on 12 test images (fewer than 30): too few for a reliable figure.'
    >>> too_few_images(40) is None
    True
    """
    has_n = isinstance(n, int) and not isinstance(n, bool)
    if has_n and n >= MIN_RELIABLE_N:
        return None
    return (f"These figures rest on {n if has_n else 'an unknown number of'} test images "
            f"(fewer than {MIN_RELIABLE_N}): too few for a reliable figure.")


def figures_source(split, n=None) -> str:
    """What a run's same-source figures (its card's ``metrics``) were computed on, in words: the split, or the
    out-of-fold predictions of every image of a cross-validated run. An unknown split reads as the test split
    (cards written before the split was recorded).

    >>> figures_source("test", 120), figures_source("val", 30)
    ('test split, 120 images', 'validation split, 30 images')
    >>> figures_source(CROSS_VALIDATION, 80)
    'out-of-fold predictions of all 80 images'
    """
    has_n = isinstance(n, int) and not isinstance(n, bool)
    if split == CROSS_VALIDATION:
        return f"out-of-fold predictions of all {n if has_n else 'its'} images"
    name = "validation" if split == "val" else "test"
    return f"{name} split" + (f", {n} images" if has_n else "")


def source_tag(split) -> str:
    """What a figure shown under a held-out-test heading adds when it is not one: ``" (cross-validated)"``.

    >>> metric_with_n(0.95, n=80) + source_tag(CROSS_VALIDATION), source_tag("test")
    ('0.950 (n = 80) (cross-validated)', '')
    """
    return " (cross-validated)" if split == CROSS_VALIDATION else ""
