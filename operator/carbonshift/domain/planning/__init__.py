"""Carbon-aware planning: when and where to run jobs so that they emit the least CO2e by their deadline.

Pure and deterministic (no I/O, `now` is an argument). `plan_job` plans one job over candidate clusters;
`plan_fleet_greedy` and `plan_fleet_milp` plan many jobs sharing finite GPUs. See docs/simulator.md.
"""

from carbonshift.domain.planning.fleet import FleetPlan, FleetSlot, plan_fleet_greedy, plan_fleet_milp
from carbonshift.domain.planning.grid import Grid, planning_grid
from carbonshift.domain.planning.model import (
    Cluster,
    Flag,
    Job,
    Plan,
    PlanningError,
    Policy,
    Reason,
    RunWindow,
)
from carbonshift.domain.planning.single import latest_safe_start, plan_job

__all__ = [
    "Cluster",
    "Flag",
    "FleetPlan",
    "FleetSlot",
    "Grid",
    "Job",
    "Plan",
    "PlanningError",
    "Policy",
    "Reason",
    "RunWindow",
    "latest_safe_start",
    "plan_fleet_greedy",
    "plan_fleet_milp",
    "plan_job",
    "planning_grid",
]
