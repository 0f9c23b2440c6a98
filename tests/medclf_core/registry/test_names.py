"""medclf_core.registry.names: the one run-name rule."""

from __future__ import annotations

import pytest

from medclf_core.errors import ModelError
from medclf_core.registry.names import check_run_name


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 101])
def test_bad_names(name):
    with pytest.raises(ModelError):
        check_run_name(name)


@pytest.mark.parametrize("name", ["r", "chest-xray-pneumonia", "run_2.1", "9" + "x" * 99])
def test_good_names_are_returned(name):
    assert check_run_name(name) == name
