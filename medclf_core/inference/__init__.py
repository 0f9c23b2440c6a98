"""The facade a page or the command line calls: :class:`~medclf_core.inference.predictor.Predictor`
loads a run once and returns results ready to show (decision, probabilities, verdict, heat map and
overlay, faithfulness in words); :mod:`~medclf_core.inference.folder` evaluates or predicts a folder.

May import: :mod:`medclf_core.explain` and the layers below it.
"""
