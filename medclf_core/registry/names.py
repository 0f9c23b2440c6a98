"""The one run-name rule: what may name a run folder (training's config, the store and the card all check it).

    >>> check_run_name("chest-xray-pneumonia")
    'chest-xray-pneumonia'
    >>> check_run_name("../etc")
    Traceback (most recent call last):
    ...
    medclf_core.errors.ModelError: '../etc' is not a valid run name: use letters, digits, '.', '_' and '-' (at most 100, starting with a letter or digit).
"""

from __future__ import annotations

import re

from medclf_core.errors import ModelError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """``name`` if it can name a run folder, else :class:`ModelError` saying what a name may hold."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):  # fullmatch: "$" alone lets "run\n" through
        raise ModelError(f"'{name}' is not a valid run name: use letters, digits, '.', '_' and '-' "
                         "(at most 100, starting with a letter or digit).")
    return name


def check_site_name(name: str) -> str:
    """``name`` if it can name a site calibration (``sites/<name>.json`` in a run folder: the run-name rule,
    so no path separator, no ``..``), else :class:`ModelError` saying what a name may hold.

    >>> check_site_name("st-marys")
    'st-marys'
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ModelError(f"'{name}' is not a valid site name: use letters, digits, '.', '_' and '-' "
                         "(at most 100, starting with a letter or digit).")
    return name
