"""api layer of carbonshift."""
