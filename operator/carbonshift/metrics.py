"""Every Prometheus metric carbonshift exports, declared once (prefix `carbonshift_`).

Handlers and adapters update these; the chart's dashboard and alert rules query them by these names, and a test
scrapes them with a real Prometheus. Labels are bounded: zone, provider, signal, namespace, name, budget, outcome.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

GRID_INTENSITY = Gauge(
    "carbonshift_grid_intensity_g_per_kwh",
    "Grid carbon intensity of the current slot, gCO2e/kWh, as the operator's planner sees it.",
    ["zone", "provider", "signal"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "carbonshift_provider_errors_total",
    "Failed requests to a carbon-intensity provider.",
    ["provider", "zone"],
    registry=REGISTRY,
)
PROVIDER_FALLBACKS = Counter(
    "carbonshift_provider_fallbacks_total",
    "Forecasts answered by a fallback (not the first provider), or by nobody (provider=none).",
    ["zone", "provider"],
    registry=REGISTRY,
)
JOBS = Gauge(
    "carbonshift_jobs",
    "CarbonAwareJobs by namespace and phase.",
    ["namespace", "phase"],
    registry=REGISTRY,
)
JOB_ENERGY = Gauge(
    "carbonshift_job_energy_kwh",
    "GPU energy of a CarbonAwareJob so far (kWh).",
    ["namespace", "name", "source"],
    registry=REGISTRY,
)
JOB_EMISSIONS = Gauge(
    "carbonshift_job_emissions_grams",
    "Emissions of a CarbonAwareJob so far (gCO2e).",
    ["namespace", "name"],
    registry=REGISTRY,
)
JOB_AVOIDED = Gauge(
    "carbonshift_job_avoided_emissions_grams",
    "Emissions avoided by a CarbonAwareJob versus running at submission (gCO2e).",
    ["namespace", "name"],
    registry=REGISTRY,
)
JOB_AVOIDED_PART = Gauge(
    "carbonshift_job_avoided_emissions_by_counterfactual_grams",
    "Emissions avoided by a CarbonAwareJob, by part: temporal (same cluster at submission minus actual) and spatial "
    "(home cluster at submission minus same cluster at submission); they sum to the total (gCO2e).",
    ["namespace", "name", "part"],
    registry=REGISTRY,
)
JOB_UNPRICED = Gauge(
    "carbonshift_job_unpriced_energy_kwh",
    "GPU energy of a CarbonAwareJob with no usable intensity data, in no emissions figure (kWh).",
    ["namespace", "name"],
    registry=REGISTRY,
)
JOB_EMBODIED = Gauge(
    "carbonshift_job_embodied_emissions_grams",
    "Embodied emissions share of a CarbonAwareJob: GPU-hours x embodied per GPU / lifetime hours (SCI's M, gCO2e).",
    ["namespace", "name"],
    registry=REGISTRY,
)
JOB_SCI = Gauge(
    "carbonshift_job_sci_grams_per_million_units",
    "Software Carbon Intensity of a CarbonAwareJob: (operational + embodied) gCO2e per 1M units of the work it "
    "reports (annotation carbonshift.io/work-done).",
    ["namespace", "name", "unit"],
    registry=REGISTRY,
)
JOB_PLANNED_START = Gauge(
    "carbonshift_job_next_transition_timestamp_seconds",
    "Planning time of a CarbonAwareJob's next resume or suspension (Unix seconds).",
    ["namespace", "name"],
    registry=REGISTRY,
)
DEADLINE_AT_RISK = Gauge(
    "carbonshift_job_deadline_at_risk",
    "1 when a CarbonAwareJob cannot meet its deadline (condition DeadlineAtRisk).",
    ["namespace", "name"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "carbonshift_transitions_total",
    "Job transitions applied, by action (resume, suspend, create).",
    ["action"],
    registry=REGISTRY,
)
BUDGET_USED_RATIO = Gauge(
    "carbonshift_budget_used_ratio",
    "Largest used/limit ratio of an EnergyBudget in its current period.",
    ["namespace", "budget"],
    registry=REGISTRY,
)
BUDGET_EXCEEDED = Gauge(
    "carbonshift_budget_exceeded",
    "1 when an EnergyBudget's limit is reached in its current period.",
    ["namespace", "budget"],
    registry=REGISTRY,
)
PLANNER_SECONDS = Histogram(
    "carbonshift_planner_duration_seconds",
    "Time to plan one CarbonAwareJob.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "carbonshift_reconcile_duration_seconds",
    "Time of one reconcile of one CarbonAwareJob, by outcome (ok, error).",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
PROMETHEUS_ERRORS = Counter(
    "carbonshift_prometheus_errors_total",
    "Failed queries to Prometheus for DCGM energy.",
    registry=REGISTRY,
)
