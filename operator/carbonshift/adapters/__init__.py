"""adapters layer of carbonshift."""
