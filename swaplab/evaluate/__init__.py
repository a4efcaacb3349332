"""swaplab.evaluate."""
