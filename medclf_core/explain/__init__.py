"""medclf_core.explain.cams."""
