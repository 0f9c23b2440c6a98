"""medclf_core.data.dataset."""
