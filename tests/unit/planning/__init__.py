"""Tests of the planner (carbonshift.domain.planning)."""
