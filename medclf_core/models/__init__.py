"""Model factories: the registry of architectures (one :class:`ArchSpec` entry per network,
with its pretrained weights, preprocessing, feature and CAM layers), the classifier head, PyTorch
state dicts read without PyTorch, seed ensembles as one flat model, and rebuilding layer graphs.

May import: :mod:`medclf_core.io`, :mod:`medclf_core.data` and the base modules.
"""
