"""Sub-commands of the `carbonshift` CLI, one module each (see carbonshift.cli)."""
