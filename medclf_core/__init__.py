"""medclf_core: the engine under the medclf app, importable and testable without Streamlit.

Subpackages are layers; imports flow down, never up (``tests/medclf_core/test_layout.py`` checks it):

- ``errors``, ``formatting``: plain user messages; the one number formatter (used by every layer);
- ``io``: decode images and DICOM, de-identify, zip guards, atomic writes, stale temp folders;
- ``data``: scan, audit, split, fingerprint, uploads, augmentation, the one tf.data pipeline;
- ``models``: the architecture registry, heads, PyTorch weights without PyTorch, ensembles;
- ``registry``: model cards and runs on disk, recorded evaluations, export;
- ``trust``: metrics and thresholds, calibration, the out-of-distribution gate, verdicts;
- ``explain``: Grad-CAM family, faithfulness, rendering;
- ``inference``: the :class:`~medclf_core.inference.predictor.Predictor` facade, folders;
- ``training``: config, session, fitting, jobs in the background, events;
- ``reports``: PDF, CSV, plots;  ``pacs``: DICOMweb read and DICOM write-back (SR, Secondary Capture, PDF);
- ``server``: what the Streamlit server needs;  ``cli``: the ``medclf`` command.

Importing this package (or any subpackage) does not import TensorFlow.
"""

__version__ = "0.1.0"
