"""medclf_core.registry.store."""
