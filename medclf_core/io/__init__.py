"""medclf_core.io."""
