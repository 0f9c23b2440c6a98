"""Exceptions whose message is meant for the person using the app or the CLI.

Anything raised as a :class:`MedclfError` is shown as its message alone (no
traceback). Everything else is a bug and is reported as one.
"""


class MedclfError(Exception):
    """Base class: the message is a complete, plain-language sentence."""


class ImageError(MedclfError):
    """An input file cannot be used as an image (unreadable, unsupported, unsafe)."""


class DatasetError(MedclfError):
    """A dataset folder or archive cannot be used for training or evaluation."""


class ModelError(MedclfError):
    """A model or run folder is missing, damaged, or does not fit the input."""


class TrainingCancelled(MedclfError):
    """Raised inside training when a cancel was requested; nothing is registered."""
