"""swaplab.train."""
