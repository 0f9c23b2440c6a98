"""medclf_core.cli.commands."""
