"""A "not for this image" check from an MR image's DICOM header: diffusion, perfusion, angiography,
susceptibility-weighted images and projections, for a model trained on structural MRI only.

A brain MRI study in a PACS holds many series (T1, T2, FLAIR, but also DWI, ADC maps, SWI, angiography and its
projections), and the PACS source reads the first images of every series. A model whose card says
``intended_use.mr_sequences: "structural"`` (the brain model: its training slices are T1, T1 with contrast, T2
and FLAIR) refuses an MR image whose header marks it as one of the others, with a plain reason. Only the
header is read (``ImageType`` values, ``AngioFlag``, and the standard diffusion attributes ``DiffusionBValue`` above 0
and ``DiffusionDirectionality`` other than NONE, which some scanners write where ``ImageType`` says only
``ORIGINAL\\PRIMARY``), so a PNG or JPEG, or a header that says nothing, is not refused by this check. A b = 0 image
of a diffusion series is not refused: it reads like a T2 slice, and some scanners write b = 0 on every image.

    >>> sequence_reason({"mr_sequences": "structural"}, {"Modality": "MR", "ImageType": ["DERIVED", "PRIMARY",
    ...                                                                                  "DIFFUSION", "ADC"]})
    'the DICOM header marks it as an ADC map (ImageType ADC); this model is for structural MRI (T1, T2, FLAIR)'
    >>> sequence_reason({"mr_sequences": "structural"}, {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "M"]})
"""

from __future__ import annotations

from collections.abc import Mapping

from medclf_core.registry.validation import STRUCTURAL_MRI as STRUCTURAL
#: ``ImageType`` values that mark an MR image as not structural, most specific first, with their plain names.
NOT_STRUCTURAL = {"ADC": "an ADC map", "EADC": "an exponential ADC map", "TRACEW": "a diffusion trace image",
                  "FA": "a fractional anisotropy map", "DIFFUSION": "a diffusion image",
                  "PERFUSION": "a perfusion image", "SWI": "a susceptibility-weighted image",
                  "MNIP": "a minimum intensity projection", "MIP": "a maximum intensity projection",
                  "PROJECTION IMAGE": "a projection image"}


def _values(value) -> list[str]:
    """A DICOM multi-value as text items (a list, or one text with ``\\`` between the values)."""
    items = value if isinstance(value, list | tuple) else str(value or "").split("\\")
    return [str(v).strip().upper() for v in items if str(v).strip()]


def sequence_reason(intended_use: Mapping | None, dicom: Mapping | None) -> str | None:
    """A plain refuse reason when the card is for structural MRI and the header marks the MR image as something
    else (module docstring); None otherwise."""
    if (intended_use or {}).get("mr_sequences") != STRUCTURAL or not dicom:
        return None
    if "MR" not in _values(dicom.get("Modality")):
        return None
    if _values(dicom.get("AngioFlag")) == ["Y"]:
        what = "an angiography image (AngioFlag Y)"
    elif (why := _diffusion(dicom)) is not None:
        what = f"a diffusion image ({why})"
    else:
        marked = set(_values(dicom.get("ImageType")))
        kind = next((k for k in NOT_STRUCTURAL if k in marked), None)
        if kind is None:
            return None
        what = f"{NOT_STRUCTURAL[kind]} (ImageType {kind})"
    return f"the DICOM header marks it as {what}; this model is for structural MRI (T1, T2, FLAIR)"


def _diffusion(dicom: Mapping) -> str | None:
    """The diffusion attribute that marks the image, in words ("DiffusionBValue 1000"), or None."""
    b = _values(dicom.get("DiffusionBValue"))
    try:
        if b and float(b[0]) > 0:
            return f"DiffusionBValue {float(b[0]):g}"
    except ValueError:
        pass
    direction = _values(dicom.get("DiffusionDirectionality"))
    if direction and direction[0] in ("DIRECTIONAL", "ISOTROPIC", "BMATRIX"):
        return f"DiffusionDirectionality {direction[0]}"
    return None
