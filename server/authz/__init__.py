"""Authorization: Cedar policies decide every admin API action."""
