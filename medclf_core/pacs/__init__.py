"""A PACS as a source and a destination: read studies over DICOMweb and write results back as DICOM.

- :mod:`~medclf_core.pacs.client`: :class:`~medclf_core.pacs.client.PacsConnection` (``dicomweb-client``):
  search studies, list series and instances, fetch one instance as Part 10 bytes; every fault is a
  :class:`~medclf_core.pacs.client.PacsError` with a plain message and no identifier;
- :mod:`~medclf_core.pacs.writeback`: the result of one instance as a Comprehensive SR, the heat-map
  overlay as a Secondary Capture and the PDF report as Encapsulated PDF (``highdicom``), stored as new
  series of the same study, all or nothing;
- :mod:`~medclf_core.pacs.flow`: :func:`~medclf_core.pacs.flow.predict_from_pacs`, a study or series
  through the same decode, gate and heat-map path as an upload.

May import: :mod:`medclf_core.reports` and the layers below it; the server, the CLI and the pages import it.
Importing it does not import TensorFlow, dicomweb-client or highdicom (they load on first use).
"""
