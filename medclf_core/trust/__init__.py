"""What a prediction can be trusted for: ``metrics`` (metrics of a set of predictions, operating thresholds),
``calibration`` (temperature scaling, its error, the card's calibration entry), ``features`` (the gate's
features in the same forward pass as the probabilities), ``ood`` (the out-of-distribution gate and the DICOM
header check), ``colour`` (a colour photograph or graphic is not a radiograph, CT or MR image), ``body_part`` (the
router's head-or-not probe) and ``verdict`` (each result's out-of-distribution fields and warning).

May import: :mod:`medclf_core.registry` and the layers below it (``models``, ``data``, ``io``, base).
"""
