"""medclf_core.models."""
