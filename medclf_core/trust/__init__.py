"""medclf_core.trust.verdict."""
