"""medclf_core.registry.names: the one run-name rule."""

from __future__ import annotations

import pytest

from medclf_core.errors import ModelError
from medclf_core.registry.names import check_run_name, check_site_name


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 101, "run\n", None])
def test_bad_names(name):
    with pytest.raises(ModelError):
        check_run_name(name)


@pytest.mark.parametrize("name", ["r", "chest-xray-pneumonia", "run_2.1", "9" + "x" * 99])
def test_good_names_are_returned(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", "../up", "a/b", "a\\b", ".hidden", "x" * 101, "ok\n", None])
def test_bad_site_names(name):
    """A site name becomes a file name in the run folder: no separator, no '..' start, no trailing newline."""
    with pytest.raises(ModelError, match="site name"):
        check_site_name(name)


def test_good_site_name_is_returned():
    assert check_site_name("st-marys_2") == "st-marys_2"
