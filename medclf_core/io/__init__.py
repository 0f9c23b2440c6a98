"""Reading and writing bytes: decode every image format (PNG, JPEG, BMP, TIFF, DICOM) into one
:class:`~medclf_core.io.pixels.DecodedImage`, de-identify DICOM text, guard zip archives, write files
atomically, and clean up temporary folders left by dead processes.

The lowest layer: it may import only :mod:`medclf_core.errors` and :mod:`medclf_core.formatting`
(and third-party libraries). Everything above reads images and writes files through it.
"""
