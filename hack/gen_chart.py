"""Generate the parts of charts/carbonshift that have another source of truth, or check that they are in sync.

| generated file (under charts/carbonshift/) | source |
|---|---|
| templates/crds/carbonshift.io_*.yaml | crds/carbonshift.io_*.yaml (from the API models by `carbonshift crds`) |
| crds/kopf.dev_peerings.yaml | crds/kopf.dev_peerings.yaml |
| templates/_rbac_rules.tpl | operator/carbonshift/api/rbac.py (CLUSTER_RULES, NAMESPACE_RULES) |
| values.schema.json | values.yaml (types of the defaults, `# --` descriptions, `# @schema {...}` keywords) |
| dashboards/carbonshift.json | PANELS in this file (PromQL over the metrics of operator/carbonshift/metrics.py) |

Usage: `.venv/bin/python hack/gen_chart.py` writes them; `--check` writes nothing and exits 1 naming each stale file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from carbonshift.api import rbac  # noqa: E402

CHART = REPO / "charts" / "carbonshift"
CRD_SOURCE = REPO / "crds"
PEERING_CRDS = "kopf.dev_peerings.yaml"
# Resources of the core and kopf APIs that are cluster-scoped; those of carbonshift.io come from crds/ (`scope`).
CLUSTER_SCOPED_BUILTIN = frozenset(
    {"nodes", "namespaces", "customresourcedefinitions", "clusterkopfpeerings", "subjectaccessreviews",
     "validatingwebhookconfigurations", "mutatingwebhookconfigurations", "admissionchecks", "clusterqueues",
     "clustertrainingruntimes"}
)  # fmt: skip


class GenerationError(Exception):
    """A source cannot be turned into chart files (an undocumented value, a template delimiter in a CRD...)."""


# -- CRDs ------------------------------------------------------------------------------------------------------------
def crd_template(source: Path) -> str:
    """A Helm template of one generated CRD: installed when crds.install, kept on uninstall when crds.keep."""
    text = source.read_text(encoding="utf-8")
    if "{{" in text or "}}" in text:
        raise GenerationError(f"{source}: contains a Go template delimiter; it cannot be embedded in a template")
    doc = yaml.safe_load(text)
    meta = doc["metadata"]
    extra = set(meta) - {"name", "labels"}
    if extra:
        raise GenerationError(f"{source}: metadata.{sorted(extra)} is not carried into the chart; extend gen_chart")
    if (meta.get("labels") or {}) != {"app.kubernetes.io/part-of": "carbonshift"}:
        raise GenerationError(f"{source}: labels differ from the chart's part-of label; extend gen_chart")
    spec = yaml.safe_dump(doc["spec"], sort_keys=False, width=120, allow_unicode=True)
    indented = "".join(f"  {line}" if line.strip() else line for line in spec.splitlines(keepends=True))
    return (
        f"{{{{- /* Generated from crds/{source.name} by hack/gen_chart.py; do not edit. */}}}}\n"
        "{{- if .Values.crds.install }}\n"
        f"apiVersion: {doc['apiVersion']}\n"
        f"kind: {doc['kind']}\n"
        "metadata:\n"
        f"  name: {meta['name']}\n"
        "  labels:\n"
        '    {{- include "carbonshift.labels" . | nindent 4 }}\n'
        "  {{- if .Values.crds.keep }}\n"
        "  annotations:\n"
        "    helm.sh/resource-policy: keep\n"
        "  {{- end }}\n"
        "spec:\n"
        f"{indented}"
        "{{- end }}\n"
    )


def peering_crds(source: Path) -> str:
    return (
        f"# Generated from crds/{source.name} by hack/gen_chart.py; do not edit.\n"
        "# Helm installs this directory before the templates (so the peering object can be created in the same\n"
        "# release) and never upgrades or deletes it.\n" + source.read_text(encoding="utf-8")
    )


def crd_scopes() -> dict[str, bool]:
    """Plural of every carbonshift.io CRD -> whether it is cluster-scoped."""
    scopes = {}
    for path in sorted(CRD_SOURCE.glob("carbonshift.io_*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        scopes[doc["spec"]["names"]["plural"]] = doc["spec"]["scope"] == "Cluster"
    return scopes


# -- RBAC ------------------------------------------------------------------------------------------------------------
def is_cluster_scoped(resource: str, crd_cluster_scoped: dict[str, bool]) -> bool:
    """`nodes`, `computeclusters/status`... are cluster-scoped; subresources share their resource's scope."""
    base = resource.split("/", 1)[0]
    return base in CLUSTER_SCOPED_BUILTIN or crd_cluster_scoped.get(base, False)


def split_rules(
    rules: list[dict[str, Any]], crd_cluster_scoped: dict[str, bool], *, cluster: bool
) -> list[dict[str, Any]]:
    """The part of each rule whose resources are cluster-scoped (cluster=True) or namespaced (cluster=False)."""
    out = []
    for rule in rules:
        kept = [r for r in rule["resources"] if is_cluster_scoped(r, crd_cluster_scoped) == cluster]
        if kept:
            out.append({**rule, "resources": kept})
    return out


def yaml_rules(rules: list[dict[str, Any]]) -> str:
    lines = []
    for rule in rules:
        lines.append(f"- apiGroups: {json.dumps(rule['apiGroups'])}")
        lines.append(f"  resources: {json.dumps(rule['resources'])}")
        lines.append(f"  verbs: {json.dumps(rule['verbs'])}")
    return "\n".join(lines)


def rbac_template() -> str:
    scopes = crd_scopes()
    parts = {
        "clusterRules": (rbac.CLUSTER_RULES, "rbac.CLUSTER_RULES: every rule, for a cluster-wide operator"),
        "clusterScopedRules": (
            split_rules(rbac.CLUSTER_RULES, scopes, cluster=True),
            "the cluster-scoped resources of rbac.CLUSTER_RULES, for an operator limited to some namespaces",
        ),
        "namespacedRules": (
            split_rules(rbac.CLUSTER_RULES, scopes, cluster=False),
            "the namespaced resources of rbac.CLUSTER_RULES, bound in each watched namespace",
        ),
        "secretRules": (rbac.NAMESPACE_RULES, "rbac.NAMESPACE_RULES, bound in the release namespace"),
    }
    out = ["{{- /* Generated from operator/carbonshift/api/rbac.py by hack/gen_chart.py; do not edit. */}}"]
    for name, (rules, what) in parts.items():
        out.append(f"{{{{- /* {what} */}}}}")
        out.append(f'{{{{- define "carbonshift.rbac.{name}" -}}}}')
        out.append(yaml_rules(rules))
        out.append("{{- end }}")
    return "\n".join(out) + "\n"


# -- values.schema.json ----------------------------------------------------------------------------------------------
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?:\s|$)")


@dataclass
class ValueDoc:
    description: list[str] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)


def value_docs(text: str) -> dict[tuple[str, ...], ValueDoc]:
    """The `# --` description and `# @schema` keywords of every key of values.yaml, by path."""
    docs: dict[tuple[str, ...], ValueDoc] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            pending.append(stripped)
            continue
        match = KEY_LINE.match(raw)
        if not stripped or not match:
            pending = [] if not stripped else pending
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        doc = ValueDoc()
        in_description = False
        for comment in pending:
            body = comment.lstrip("#").strip()
            if body.startswith("@schema"):
                try:
                    doc.schema.update(json.loads(body.removeprefix("@schema")))
                except json.JSONDecodeError as exc:
                    raise GenerationError(f"values.yaml:{number}: bad @schema JSON ({exc})") from None
                in_description = False
            elif body.startswith("--"):
                doc.description = [body.removeprefix("--").strip()]
                in_description = True
            elif in_description:
                doc.description.append(body)
        docs[tuple(k for _, k in stack)] = doc
        pending = []
    return docs


def inferred(default: Any) -> dict[str, Any]:
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "integer"}
    if isinstance(default, float):
        return {"type": "number"}
    if isinstance(default, str):
        return {"type": "string"}
    if isinstance(default, list):
        return {"type": "array"}
    if isinstance(default, dict):
        return {"type": "object"}
    raise GenerationError(f"cannot infer a schema type from {default!r}; give the value a non-null default")


def value_schema(path: tuple[str, ...], default: Any, docs: dict[tuple[str, ...], ValueDoc]) -> dict[str, Any]:
    doc = docs.get(path)
    if doc is None or not doc.description:
        raise GenerationError(f"values.yaml: {'.'.join(path)} has no `# --` description")
    schema: dict[str, Any] = {"description": " ".join(doc.description), **inferred(default)}
    free_form = "type" in doc.schema
    if isinstance(default, dict) and not free_form:
        schema["properties"] = {k: value_schema((*path, k), v, docs) for k, v in default.items()}
        schema["additionalProperties"] = False
    schema.update(doc.schema)
    return schema


def values_schema(values_path: Path) -> str:
    text = values_path.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    docs = value_docs(text)
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the carbonshift chart",
        "description": "Generated from values.yaml by hack/gen_chart.py; do not edit.",
        "type": "object",
        "properties": {
            # Helm passes `global` to every chart; accept it so the chart can be a dependency of another one.
            "global": {"description": "Values shared with parent and sibling charts.", "type": "object"},
            **{k: value_schema((k,), v, docs) for k, v in values.items()},
        },
        "additionalProperties": False,
    }
    return json.dumps(schema, indent=2) + "\n"


# -- Grafana dashboard -----------------------------------------------------------------------------------------------
# Grafana variables in the queries: $zone and $namespace (multi-value, regex), $__rate_interval.
JOBS = 'namespace=~"$namespace"'
PROVIDER_ERRORS = 'sum by (provider, zone) (rate(carbonshift_provider_errors_total{zone=~"$zone"}[$__rate_interval]))'
FALLBACKS = 'sum by (provider, zone) (increase(carbonshift_provider_fallbacks_total{zone=~"$zone"}[$__rate_interval]))'
PLANNER_P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(carbonshift_planner_duration_seconds_bucket[$__rate_interval])))"
)
RECONCILE_P95 = (
    "histogram_quantile(0.95, sum by (le) "
    '(rate(carbonshift_reconcile_duration_seconds_bucket{outcome="ok"}[$__rate_interval])))'
)
RECONCILE_ERRORS = 'sum(rate(carbonshift_reconcile_duration_seconds_count{outcome="error"}[$__rate_interval]))'
DCGM_ERRORS = "sum(rate(carbonshift_prometheus_errors_total[$__rate_interval]))"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, stat, bargauge, table
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[dict[str, Any], ...] = ()


PANELS: tuple[Panel, ...] = (
    Panel(
        "Grid carbon intensity by zone, with running jobs",
        "timeseries",
        (
            ('carbonshift_grid_intensity_g_per_kwh{zone=~"$zone"}', "{{zone}} ({{provider}}, {{signal}})"),
            (f'sum(carbonshift_jobs{{phase="Running", {JOBS}}})', "running CarbonAwareJobs"),
        ),
        unit="none",
        description="gCO2e/kWh of the current slot as the planner sees it; the running-job count (right axis) "
        "shows the windows jobs actually ran in, and the resume/suspend annotations mark each planned transition.",
        width=24,
        overrides=(
            {
                "matcher": {"id": "byName", "options": "running CarbonAwareJobs"},
                "properties": [
                    {"id": "custom.axisPlacement", "value": "right"},
                    {"id": "custom.drawStyle", "value": "bars"},
                    {"id": "custom.fillOpacity", "value": 30},
                    {"id": "unit", "value": "short"},
                ],
            },
        ),
    ),
    Panel(
        "Next planned transition per job",
        "table",
        ((f"carbonshift_job_next_transition_timestamp_seconds{{{JOBS}}} * 1000 > 0", ""),),
        unit="dateTimeAsIso",
        description="When each CarbonAwareJob next resumes or is suspended (the planner's time).",
        options={"showHeader": True},
    ),
    Panel(
        "CarbonAwareJobs by phase",
        "timeseries",
        ((f"sum by (phase) (carbonshift_jobs{{{JOBS}}})", "{{phase}}"),),
        description="Pending, Waiting, Running, Suspended, Succeeded, Failed.",
    ),
    Panel(
        "GPU energy per namespace",
        "timeseries",
        ((f"sum by (namespace) (carbonshift_job_energy_kwh{{{JOBS}}})", "{{namespace}}"),),
        unit="kwatth",
        description="Energy of the jobs the operator knows, so far (measured by DCGM or estimated).",
    ),
    Panel(
        "Emissions per namespace",
        "timeseries",
        ((f"sum by (namespace) (carbonshift_job_emissions_grams{{{JOBS}}}) / 1000", "{{namespace}}"),),
        unit="masskg",
        description="kgCO2e of the jobs so far: energy x PUE x grid intensity of each interval.",
    ),
    Panel(
        "Avoided emissions: temporal and spatial",
        "stat",
        (
            (f"sum(carbonshift_job_avoided_emissions_grams{{{JOBS}}}) / 1000", "total"),
            (
                f'sum(carbonshift_job_avoided_emissions_by_counterfactual_grams{{{JOBS},part="temporal"}}) / 1000',
                "temporal",
            ),
            (
                f'sum(carbonshift_job_avoided_emissions_by_counterfactual_grams{{{JOBS},part="spatial"}}) / 1000',
                "spatial",
            ),
        ),
        unit="masskg",
        description="kgCO2e saved against running every job at submission in its home cluster (total), split into "
        "temporal (same cluster, at submission) and spatial (home cluster versus the one it ran in). Unpriced energy "
        "counts in neither.",
        width=6,
    ),
    Panel(
        "Avoided emissions per namespace",
        "bargauge",
        ((f"sum by (namespace) (carbonshift_job_avoided_emissions_grams{{{JOBS}}}) / 1000", "{{namespace}}"),),
        unit="masskg",
        width=6,
    ),
    Panel(
        "Unpriced energy and embodied emissions",
        "stat",
        (
            (f"sum(carbonshift_job_unpriced_energy_kwh{{{JOBS}}})", "unpriced kWh"),
            (f"sum(carbonshift_job_embodied_emissions_grams{{{JOBS}}}) / 1000", "embodied kgCO2e"),
        ),
        description="Energy with no intensity data for its time (in no emissions figure until re-priced), and the "
        "jobs' share of their GPUs' embodied emissions (SCI's M).",
        width=6,
    ),
    Panel(
        "SCI per 1M units of work",
        "table",
        ((f"carbonshift_job_sci_grams_per_million_units{{{JOBS}}}", ""),),
        description="(operational + embodied gCO2e) per 1M units of the work each job reports (e.g. tokens).",
        width=6,
    ),
    Panel(
        "Energy budget use",
        "bargauge",
        ((f"carbonshift_budget_used_ratio{{{JOBS}}}", "{{namespace}}/{{budget}}"),),
        unit="percentunit",
        description="Largest used/limit ratio of each EnergyBudget in its current period (1 = exhausted).",
        options={"displayMode": "gradient", "orientation": "horizontal"},
    ),
    Panel(
        "Provider errors per second",
        "timeseries",
        ((PROVIDER_ERRORS, "{{provider}} {{zone}}"),),
        unit="reqps",
        description="Failed requests to carbon-intensity providers.",
        width=8,
    ),
    Panel(
        "Forecasts from a fallback",
        "timeseries",
        ((FALLBACKS, "{{zone}} answered by {{provider}}"),),
        description="Forecasts not answered by the first provider; provider=none means no data at all.",
        width=8,
    ),
    Panel(
        "Provider in use per zone",
        "table",
        (('count by (zone, provider, signal) (carbonshift_grid_intensity_g_per_kwh{zone=~"$zone"})', ""),),
        description="Who answered each zone's latest forecast, and its signal (average or marginal).",
        width=8,
    ),
    Panel(
        "Jobs whose deadline is at risk",
        "stat",
        ((f"sum(carbonshift_job_deadline_at_risk{{{JOBS}}})", "at risk"),),
        width=6,
        options={"colorMode": "background"},
    ),
    Panel(
        "Transitions per hour",
        "timeseries",
        (("sum by (action) (increase(carbonshift_transitions_total[1h]))", "{{action}}"),),
        width=6,
    ),
    Panel(
        "Planner and reconcile latency (p95)",
        "timeseries",
        ((PLANNER_P95, "plan one job"), (RECONCILE_P95, "reconcile one job")),
        unit="s",
        width=6,
    ),
    Panel(
        "Reconcile errors and Prometheus query errors per second",
        "timeseries",
        ((RECONCILE_ERRORS, "reconcile errors"), (DCGM_ERRORS, "DCGM query errors")),
        unit="reqps",
        width=6,
    ),
)
ANNOTATIONS = (
    ("Resumes", 'sum(increase(carbonshift_transitions_total{action="resume"}[2m])) > 0', "green"),
    ("Suspensions", 'sum(increase(carbonshift_transitions_total{action="suspend"}[2m])) > 0', "orange"),
)
VARIABLES = (("zone", "carbonshift_grid_intensity_g_per_kwh", "zone"), ("namespace", "carbonshift_jobs", "namespace"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def dashboard_queries() -> Iterator[str]:
    """Every PromQL expression of the dashboard (panels and annotations), for the tests."""
    for panel in PANELS:
        for expr, _ in panel.targets:
            yield expr
    for _, expr, _ in ANNOTATIONS:
        yield expr


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto"}
        | ({"format": "table", "instant": True} if panel.kind == "table" else {})
        for i, (expr, legend) in enumerate(panel.targets)
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": list(panel.overrides)},
        "options": panel.options,
    }


def dashboard() -> str:
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(PANELS, 1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(panel_json(panel, panel_id, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}
    ]
    for name, metric, label in VARIABLES:
        variables.append(
            {
                "name": name,
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": f"label_values({metric}, {label})", "refId": name},
                "definition": f"label_values({metric}, {label})",
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
                "sort": 1,
            }
        )
    annotations = [
        {"name": name, "datasource": DATASOURCE, "enable": True, "expr": expr, "iconColor": color, "step": "1m",
         "titleFormat": name}
        for name, expr, color in ANNOTATIONS
    ]  # fmt: skip
    board = {
        "title": "carbonshift",
        "uid": "carbonshift",
        "description": "Generated by hack/gen_chart.py from the metrics of operator/carbonshift/metrics.py.",
        "tags": ["carbonshift", "sustainability"],
        "timezone": "utc",
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-2d", "to": "now+1d"},
        "refresh": "1m",
        "templating": {"list": variables},
        "annotations": {"list": annotations},
        "panels": panels,
    }
    return json.dumps(board, indent=2) + "\n"


# -- driver ----------------------------------------------------------------------------------------------------------
def generated_files() -> dict[Path, str]:
    files = {
        CHART / "templates" / "crds" / path.name: crd_template(path)
        for path in sorted(CRD_SOURCE.glob("carbonshift.io_*.yaml"))
    }
    files[CHART / "crds" / PEERING_CRDS] = peering_crds(CRD_SOURCE / PEERING_CRDS)
    files[CHART / "templates" / "_rbac_rules.tpl"] = rbac_template()
    files[CHART / "values.schema.json"] = values_schema(CHART / "values.yaml")
    files[CHART / "dashboards" / "carbonshift.json"] = dashboard()
    return files


def stale_generated_files(files: dict[Path, str]) -> list[Path]:
    """Generated files that differ, are missing, or are left over from a source that is gone."""
    stale = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    stale += [p for p in sorted((CHART / "templates" / "crds").glob("*.yaml")) if p not in files]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale file")
    args = parser.parse_args(argv)
    try:
        files = generated_files()
    except GenerationError as exc:
        print(f"gen_chart: {exc}", file=sys.stderr)
        return 2
    stale = stale_generated_files(files)
    if args.check:
        for path in stale:
            print(
                f"{path.relative_to(REPO)}: out of date; run `.venv/bin/python hack/gen_chart.py` and commit",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        if path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path], encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
        else:
            path.unlink()
            print(f"removed {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
