"""medclf_core.inference.predictor."""
