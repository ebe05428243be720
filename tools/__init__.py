"""Developer tools run from a checkout: the demo and the stack builder (not in the wheel)."""
