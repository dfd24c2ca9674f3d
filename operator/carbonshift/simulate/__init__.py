"""simulate layer of carbonshift."""
