"""Heat maps that can be checked: model views for tf-keras-vis, Grad-CAM, Grad-CAM++ and
Score-CAM, receptive-field geometry, the deletion-curve faithfulness score, rendering (overlay,
display-size maps), and shortcuts (burned-in marks, the body, a map's mass on them).

May import: :mod:`medclf_core.trust` and the layers below it.
"""
