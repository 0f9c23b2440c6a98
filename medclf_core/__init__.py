"""medclf_core: the engine under the medclf app, importable and testable without Streamlit.

Modules, one job each:
``images`` (decode any upload), ``dicom``, ``data`` (scan, audit, split),
``augment``, ``pipeline`` (tf.data), ``architectures`` (registry of model
factories), ``devices``, ``training``, ``events``, ``evaluation``, ``inference``,
``explain`` (Grad-CAM), ``registry`` (models/ and cards), ``cli``.
"""

__version__ = "0.1.0"
