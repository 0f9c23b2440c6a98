"""medclf_core.trust.plane: the router's plane probe, fitted, kept and read back, and the caution it serves for a
card that declares the planes its model can judge (session 21: the brain model calls every sagittal slice tumour)."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.trust.plane import MIN_P_PLANE, PLANE_FILE, PLANES, fit_plane_probe, load_plane_probe, plane_reason
from medclf_core.trust.verdict import unfamiliar_message, verdict

AXIAL_ONLY = {"modalities": ["MR"], "planes": ["axial"]}


def _clusters(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.7, (n, 3)) for c in np.eye(3) * 3])
    return x, np.repeat([0, 1, 2], n)


def _router(axial: float, sagittal: float, coronal: float) -> dict:
    return {"CT": 0.01, "MRI": 0.98, "XRAY": 0.01, "AXIAL": axial, "SAGITTAL": sagittal, "CORONAL": coronal}


def test_a_fitted_probe_tells_the_planes_apart_and_reads_back_the_same(tmp_path):
    x, y = _clusters()
    probe = fit_plane_probe(x, y, source="three clusters", for_model="2026-12-01")
    held, truth = _clusters(seed=1)
    p = probe.probabilities(held)
    assert all(set(row) == set(PLANES) and abs(sum(row.values()) - 1) < 1e-9 for row in p)
    assert np.mean([PLANES.index(max(row, key=row.get)) for row in p] == truth) > 0.95
    back = load_plane_probe(probe.save(tmp_path).parent, for_model="2026-12-01")
    again = back.probabilities(held)
    assert all(a == pytest.approx(b, rel=1e-5) for a, b in zip(again, p, strict=True))
    assert back.source == "three clusters"
    assert [f.name for f in tmp_path.iterdir()] == [PLANE_FILE]  # written by rename: no temporary file left
    assert load_plane_probe(tmp_path, for_model="2027-01-01") is None  # fitted for another router: not used
    with pytest.raises(ValueError, match="all three planes"):
        fit_plane_probe(x[:80], y[:80], source="two planes only")


def test_no_probe_is_none_and_a_damaged_one_is_a_plain_error(tmp_path):
    assert load_plane_probe(tmp_path) is None
    (tmp_path / PLANE_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="damaged"):
        load_plane_probe(tmp_path)


@pytest.mark.parametrize("router, cautioned", [
    (_router(0.05, 0.93, 0.02), "a sagittal slice (plane check P = 93.0%)"),
    (_router(0.10, 0.10, 0.80), "a coronal slice (plane check P = 80.0%)"),
    (_router(0.95, 0.03, 0.02), None),  # axial: the plane it can judge
    (_router(0.40, 0.55, 0.05), None),  # no plane sure enough (below MIN_P_PLANE)
])
def test_a_slice_in_a_plane_the_card_does_not_declare_gets_the_caution(router, cautioned):
    reason = plane_reason(AXIAL_ONLY, router)
    assert (reason is None) == (cautioned is None)
    v = verdict(None, None, AXIAL_ONLY, None, router=router)
    assert v["ood"] is not True  # a caution, never a refusal: the finding is still shown
    if cautioned:
        assert cautioned in reason and reason.endswith("this model can judge axial slices only")
        assert v["unfamiliar"] is True and v["unfamiliar_checks"] == ["plane"] and v["unfamiliar_reason"] == reason
        message = unfamiliar_message(v)
        assert message.startswith(f"Caution: it looks like {cautioned}") and "says little" in message
    else:
        assert not v["unfamiliar"] and "plane" not in v["unfamiliar_checks"]


def test_without_a_declaration_or_a_probe_nothing_changes():
    router = _router(0.02, 0.97, 0.01)
    assert plane_reason({"modalities": ["MR"]}, router) is None  # the card does not declare planes
    assert plane_reason(AXIAL_ONLY, {k: v for k, v in router.items() if k not in PLANES}) is None  # no probe
    assert plane_reason({"planes": ["axial", "sagittal"]}, router) is None
    assert MIN_P_PLANE == 0.7  # bench/plane_probe.py: 4 of 249 axial MedPix head MRIs cautioned, 51 of 58 sagittal


def test_the_plane_caution_joins_the_others_in_one_message():
    """A small sagittal image: both cautions, the plane's as a sentence of its own."""
    v = verdict(None, None, AXIAL_ONLY, None, router=_router(0.05, 0.93, 0.02), size=(40, 40), input_side=224)
    assert v["unfamiliar_checks"] == ["size", "plane"]
    message = unfamiliar_message(v)
    assert message.startswith("Caution: this image is small (it is 40 x 40 pixels")
    assert "less certain. It looks like a sagittal slice (plane check P = 93.0%)" in message


def test_a_card_declares_planes_in_one_way_only():
    from medclf_core.registry.card import CardError, ModelCard
    from medclf_core.registry.validation import IMAGING_PLANES

    assert [p.upper() for p in IMAGING_PLANES] == list(PLANES)  # the card's words and the router's keys agree
    card = {"name": "m", "class_names": ["no", "yes"], "schema_version": 2}
    assert ModelCard.from_dict({**card, "intended_use": AXIAL_ONLY})["intended_use"]["planes"] == ["axial"]
    for bad in (["oblique"], [], "axial"):
        with pytest.raises(CardError, match="planes"):
            ModelCard.from_dict({**card, "intended_use": {"planes": bad}})
