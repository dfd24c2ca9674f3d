"""domain layer of carbonshift."""
