"""The ``medclf`` command (``python -m medclf_core``): the argument parser (train flags generated
from :class:`~medclf_core.training.config.TrainConfig`), one function per command, and terminal output.

May import every layer below it; nothing imports the CLI.
"""
