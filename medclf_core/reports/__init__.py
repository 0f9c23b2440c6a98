"""What leaves the app as a document: the PDF report, the predictions CSV, and the plotly
figures and table column widths the pages draw.

May import: :mod:`medclf_core.training` (events, for curves) and the layers below it.
"""
