"""medclf_core.training.labels: items' integer labels, every labelled image in split order, class weights."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medclf_core.data.scan import Item
from medclf_core.training.labels import all_items, class_weight_for, labels_of


def test_class_weights():
    """Balanced weights n / (k * count) when on, or auto and at least 1.5:1; none when off or a class is empty."""
    assert class_weight_for([0, 1, 0, 1], 2, "auto") is None
    w = class_weight_for([0] * 10 + [1] * 30, 2, "auto")
    assert w[0] == pytest.approx(2.0) and w[1] == pytest.approx(40 / 60)
    assert class_weight_for([0] * 10 + [1] * 30, 2, "off") is None
    assert class_weight_for([0, 1], 2, "on") == {0: 1.0, 1: 1.0}
    assert class_weight_for([0, 0, 0], 2, "on") is None  # a class with no image: no weights (no division by zero)


def test_labels_and_all_items_keep_the_split_order():
    """all_items is train, then validation, then test (cross-fitting and its card rely on that order)."""
    items = {name: [Item(f"/d/{name}{i}.png", f"{name}{i}.png", label, name) for i, label in enumerate(labels)]
             for name, labels in (("train", [0, 1]), ("val", [1]), ("test", [0, 0]))}
    session = SimpleNamespace(splits=items)
    assert [it.rel for it in all_items(session)] == ["train0.png", "train1.png", "val0.png", "test0.png", "test1.png"]
    assert labels_of(all_items(session)).tolist() == [0, 1, 1, 0, 0]
    assert labels_of([]).dtype.kind == "i"
