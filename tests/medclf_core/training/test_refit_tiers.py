"""medclf_core.training.refit.add_unfamiliar_tier: a one-threshold gate gets the two tiers, and only the gate
file and the card's "ood" entry change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclf_core.errors import DatasetError
from medclf_core.registry.store import GATE_FILE
from medclf_core.training.refit import add_unfamiliar_tier
from medclf_core.trust.ood import REFUSE_FACTOR, fit_gate, load_gate


def test_add_unfamiliar_tier_touches_only_the_gate_and_the_ood_entry(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    gate = fit_gate(x, (x[:, 0] > 0).astype(int), rng.normal(size=(40, 5)), threshold=7.5, rule="old rule")
    gate.save(tmp_path)
    card = {"name": "r", "class_names": ["a", "b"], "threshold": 0.4, "calibration": {"temperature": 1.3},
            "ood": {**gate.summary(), "split": {"train": 120, "val": 40}}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "model.keras").write_bytes(b"weights")
    entry = add_unfamiliar_tier(tmp_path)
    back = load_gate(tmp_path)
    assert back.near_threshold == pytest.approx(7.5) and back.threshold == pytest.approx(REFUSE_FACTOR * 7.5)
    np.testing.assert_allclose(back.score(x[:5]), gate.score(x[:5]), rtol=1e-6)  # same statistics
    new = json.loads((tmp_path / "card.json").read_text())
    assert {k: v for k, v in new.items() if k != "ood"} == {k: v for k, v in card.items() if k != "ood"}
    assert entry == new["ood"] and new["ood"]["near_threshold"] == pytest.approx(7.5)
    assert new["ood"]["split"] == {"train": 120, "val": 40} and "refuse: 1.75 x" in new["ood"]["rule"]
    assert (tmp_path / "model.keras").read_bytes() == b"weights"
    before = (tmp_path / GATE_FILE).read_bytes()
    add_unfamiliar_tier(tmp_path)  # already two tiers: left alone
    assert (tmp_path / GATE_FILE).read_bytes() == before
    (tmp_path / GATE_FILE).unlink()
    with pytest.raises(DatasetError, match="no out-of-distribution gate"):
        add_unfamiliar_tier(tmp_path)
