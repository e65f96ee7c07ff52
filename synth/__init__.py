"""Synthetic regions and the quick-start demo: records drawn from a scheme's own code lists."""
