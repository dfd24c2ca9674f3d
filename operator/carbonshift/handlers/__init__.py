"""handlers layer of carbonshift."""
