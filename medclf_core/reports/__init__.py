"""medclf_core.reports."""
