"""Runs on disk: the model card (``card``: schema and lenient reading of older cards; ``validation``: its
field checks; ``names``: the run-name rule), the run folder and its file names (``store``), loading a run
safely, evaluations recorded beside a model (``evaluations``), the performance table shown for a model
(``performance``), and export to SavedModel/TFLite (``export``).

May import: :mod:`medclf_core.io`, :mod:`medclf_core.data`, :mod:`medclf_core.models` and the base modules.
"""
