"""Tests of the simulator (carbonshift.simulate) and `carbonshift simulate`."""
