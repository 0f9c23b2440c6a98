"""What leaves the app as a document: the PDF report, the predictions CSV, and the plotly
figures the pages draw.

May import: :mod:`medclf_core.training` (events, for curves) and the layers below it.
"""
