"""Datasets: scan a folder or zip of ``<class>/`` images, audit it (counts, unreadable files,
near-duplicates), split it without leaks, fingerprint it, stage browser uploads, augment (burned-in
marks found and erased: ``marks``, ``erase``), and build the one ``tf.data`` pipeline
that training, prediction and Grad-CAM share.

May import: :mod:`medclf_core.io` and the base modules (``errors``, ``formatting``).
"""
