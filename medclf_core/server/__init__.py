"""medclf_core.server."""
