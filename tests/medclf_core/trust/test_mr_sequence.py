"""medclf_core.trust.mr_sequence: a structural-MRI model refuses diffusion, perfusion, angiography, SWI and
projection images by their DICOM header, and nothing else."""

from __future__ import annotations

import pytest

from medclf_core.trust.mr_sequence import sequence_reason
from medclf_core.trust.verdict import verdict

STRUCTURAL = {"modalities": ["MR"], "mr_sequences": "structural"}


@pytest.mark.parametrize("image_type, angio, called", [
    (["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "NORM"], None, "a diffusion image (ImageType DIFFUSION)"),
    (["DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND"], None, "an ADC map (ImageType ADC)"),
    (["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW", "ND"], None, "a diffusion trace image (ImageType TRACEW)"),
    (["DERIVED", "PRIMARY", "SWI", "NORM", "DIS2D"], None, "a susceptibility-weighted image (ImageType SWI)"),
    ("DERIVED\\PRIMARY\\PROJECTION IMAGE\\MIP", None, "a maximum intensity projection (ImageType MIP)"),
    (["ORIGINAL", "PRIMARY", "PERFUSION"], None, "a perfusion image (ImageType PERFUSION)"),
    (["ORIGINAL", "PRIMARY", "M", "ND"], "Y", "an angiography image (AngioFlag Y)"),
])
def test_what_is_not_structural_is_refused_with_what_the_header_says(image_type, angio, called):
    dicom = {"Modality": "MR", "ImageType": image_type, **({"AngioFlag": angio} if angio else {})}
    assert sequence_reason(STRUCTURAL, dicom) == (f"the DICOM header marks it as {called}; this model is for "
                                                  "structural MRI (T1, T2, FLAIR)")
    v = verdict(None, None, STRUCTURAL, dicom)
    assert v["ood"] is True and v["ood_refused_by"] == ["dicom_header"] and called in v["ood_reason"]


@pytest.mark.parametrize("use, dicom", [
    (STRUCTURAL, {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]}),  # a T2 slice
    (STRUCTURAL, {"Modality": "MR", "ImageType": ["DERIVED", "SECONDARY", "MPR"], "AngioFlag": "N"}),
    (STRUCTURAL, {"Modality": "MR"}),  # a header that says nothing
    (STRUCTURAL, {"Modality": "CT", "ImageType": ["DERIVED", "PRIMARY", "MIP"]}),  # not MR: other checks' business
    ({"modalities": ["MR"]}, {"Modality": "MR", "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]}),
    (STRUCTURAL, None),
    # a b = 0 image of a diffusion series, and a scanner that writes b = 0 and NONE on every image
    (STRUCTURAL, {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY"], "DiffusionBValue": 0.0,
                  "DiffusionDirectionality": "NONE"}),
    (STRUCTURAL, {"Modality": "MR", "DiffusionBValue": "not a number"}),
])
def test_structural_images_other_modalities_and_cards_that_say_nothing_pass(use, dicom):
    assert sequence_reason(use, dicom) is None


def test_a_card_asks_for_structural_mri_in_one_way_only():
    from medclf_core.registry.card import CardError, ModelCard

    card = {"name": "m", "class_names": ["no", "yes"], "schema_version": 2}
    assert ModelCard.from_dict({**card, "intended_use": STRUCTURAL})["intended_use"]["mr_sequences"] == "structural"
    with pytest.raises(CardError, match="mr_sequences"):
        ModelCard.from_dict({**card, "intended_use": {"mr_sequences": "T1"}})


@pytest.mark.parametrize("extra, called", [
    ({"DiffusionBValue": 1000.0}, "DiffusionBValue 1000"),
    ({"DiffusionBValue": "800"}, "DiffusionBValue 800"),
    ({"DiffusionBValue": 0.0, "DiffusionDirectionality": "ISOTROPIC"}, "DiffusionDirectionality ISOTROPIC"),
    ({"DiffusionDirectionality": "DIRECTIONAL"}, "DiffusionDirectionality DIRECTIONAL"),
])
def test_a_diffusion_image_that_imagetype_does_not_mark_is_refused_by_the_diffusion_attributes(extra, called):
    """Session 21: some scanners write ImageType ORIGINAL\\PRIMARY on a DWI and put what it is in the standard
    diffusion attributes only; the check read ImageType and AngioFlag and let such an image through."""
    dicom = {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], **extra}
    assert sequence_reason(STRUCTURAL, dicom) == (f"the DICOM header marks it as a diffusion image ({called}); this "
                                                  "model is for structural MRI (T1, T2, FLAIR)")
    assert sequence_reason({"modalities": ["MR"]}, dicom) is None  # a card that does not ask says nothing
