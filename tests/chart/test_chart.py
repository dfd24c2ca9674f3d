"""The Helm chart, rendered by the real helm: what each set of values produces, what the schema refuses, and that
the chart's CRDs, RBAC rules, dashboard and schema are in sync with their sources (crds/, rbac.py, values.yaml).

The operator's own argument parser reads the rendered container arguments, and the provider configuration code
reads the rendered environment, so the chart and the code cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from carbonshift.adapters.carbon.config import api_provider_from_env
from carbonshift.api import rbac
from carbonshift.commands import run as run_command
from carbonshift.domain.forecasting import ForecastSpecError, parse_forecast_model
from carbonshift.handlers.energy import PROMETHEUS_URL_ENV, meter_from_env
from tests.chart.helm import (
    CHART,
    NAMESPACE,
    REPO,
    HelmError,
    find,
    helm,
    load_gen_chart,
    metrics_service,
    one,
    operator_container,
)
from tests.chart.helm import render as render_chart

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "metrics-off": {"metrics": {"enabled": False}, "serviceMonitor": {"enabled": True}},
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "prometheusrule": {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "existing-secret": {
        "operator": {"providers": ["electricitymaps", "watttime"]},
        "providerSecret": {
            "name": "grid-keys",
            "keys": {
                "ELECTRICITYMAPS_API_TOKEN": "em-token",
                "WATTTIME_USERNAME": "wt-user",
                "WATTTIME_PASSWORD": "wt-password",
            },
        },
        "providerEnv": {"WATTTIME_SIGNAL_TYPE": "co2_aoer"},
    },
    "namespace-scoped": {"operator": {"watchNamespaces": ["ml-research", "ml-prod"]}},
    "webhook-off": {"webhook": {"enabled": False}},
    "webhook-cert-manager": {"webhook": {"tls": {"certManager": {"enabled": True}}}},
    "everything": {
        "replicaCount": 3,
        "image": {"digest": "sha256:" + "a" * 64},
        "operator": {
            "providers": ["gb-carbon-intensity"],
            "traceFallback": False,
            "forecast": "gaussian:5%",
            "verbose": True,
            "extraArgs": ["--trace=DE=/data/de.csv"],
            "prometheusUrl": "http://prometheus.monitoring:9090",
            "dcgmScrapeInterval": "15s",
        },
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "job": "carbonshift"},
        "grafanaDashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "Sustainability"}},
        "crds": {"install": False},
        "peering": {"create": False},
    },
}


def render(name: str) -> list[dict[str, Any]]:
    return render_chart(VALUE_SETS[name])


def parsed_args(docs: list[dict[str, Any]]) -> argparse.Namespace:
    """The container's arguments as `carbonshift run` itself parses them (the image's entrypoint)."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    run_command.add_arguments(parser)
    return parser.parse_args(operator_container(docs)["args"])


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


# -- lint and sync ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_without_warnings(name: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps(VALUE_SETS[name]))
    out = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_generated_chart_files_are_in_sync_with_their_sources() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "hack" / "gen_chart.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_sync_check_names_a_drifted_file() -> None:
    gen = load_gen_chart()
    files = gen.generated_files()
    assert gen.stale_generated_files(files) == []
    rbac_path = CHART / "templates" / "_rbac_rules.tpl"
    files[rbac_path] = files[rbac_path].replace('"patch"', '"delete"', 1)
    assert gen.stale_generated_files(files) == [rbac_path]


def test_an_undocumented_value_fails_generation() -> None:
    gen = load_gen_chart()
    docs = gen.value_docs("# -- Documented.\nreplicaCount: 2\nzone: DE\n")
    assert gen.value_schema(("replicaCount",), 2, docs)["description"] == "Documented."
    with pytest.raises(gen.GenerationError, match="zone has no `# --` description"):
        gen.value_schema(("zone",), "DE", docs)


def test_chart_crds_render_exactly_the_crds_directory() -> None:
    rendered = {d["metadata"]["name"]: d for d in find(render("defaults"), "CustomResourceDefinition")}
    sources = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("carbonshift.io_*.yaml"))]
    assert sorted(rendered) == sorted(s["metadata"]["name"] for s in sources)
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    # kopf's peering CRDs ride in the chart's crds/ directory, unchanged.
    chart_peering = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    assert chart_peering == list(yaml.safe_load_all((REPO / "crds" / "kopf.dev_peerings.yaml").read_text()))


def test_every_chart_template_says_where_generated_files_come_from() -> None:
    for path in [*(CHART / "templates" / "crds").glob("*.yaml"), CHART / "templates" / "_rbac_rules.tpl"]:
        assert re.match(r"\{\{- /\* Generated from \S+ by hack/gen_chart.py; do not edit. \*/\}\}", path.read_text())


# -- defaults --------------------------------------------------------------------------------------------------------
def test_default_deployment_runs_two_peering_replicas_with_cli_flags_the_operator_accepts() -> None:
    docs = render("defaults")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = parsed_args(docs)
    assert args.standalone is False
    assert args.peering == "carbonshift"
    assert args.kubeconfig is None or args.kubeconfig == ""  # in-cluster config
    assert (args.zone, args.pue, args.forecast, args.tick, args.margin) == ("DE", 1.2, "persistence", "5m", "10m")
    assert args.namespace == []  # all namespaces
    assert args.metrics_port == 9090
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    # The peering object both replicas announce themselves in exists, under the name they use.
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == args.peering
    assert not find(docs, "KopfPeering")


def test_defaults_configure_no_carbon_data_so_the_operator_refuses_to_start_and_says_what_to_set() -> None:
    args = parsed_args(render("defaults"))
    assert args.providers == "" and args.trace == [] and args.demo_traces is False
    with pytest.raises(ValueError, match="no carbon-intensity provider configured") as refused:
        run_command.build_state(args)
    assert "gb-carbon-intensity, which needs no key" in str(refused.value)
    assert "operator.demoTraces=true" in str(refused.value)


def test_demo_traces_and_the_keyless_gb_provider_each_let_the_operator_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the carbon-data check, build_state stops at the in-cluster config (this test runs outside a pod)."""
    from kubernetes import config as kube_config

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for values in ({"operator": {"demoTraces": True}}, {"operator": {"providers": ["gb-carbon-intensity"]}}):
        args = parsed_args(render_chart(values))
        with pytest.raises(kube_config.ConfigException):
            run_command.build_state(args)
    assert parsed_args(render_chart({"operator": {"demoTraces": True}})).demo_traces is True


def test_default_pod_is_locked_down() -> None:
    docs = render("defaults")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The only writable place is an emptyDir at /tmp, which is also HOME.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def test_probes_hit_the_liveness_endpoint_the_operator_serves() -> None:
    docs = render("defaults")
    container = operator_container(docs)
    served = re.fullmatch(r"http://0\.0\.0\.0:(\d+)(/\S+)", parsed_args(docs).liveness)
    assert served
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"]["path"] == served[2]
        assert ports[probe["httpGet"]["port"]] == int(served[1])


def test_service_account_is_the_one_bound_to_the_rules_of_rbac_py() -> None:
    docs = render("defaults")
    sa = one(docs, "ServiceAccount")["metadata"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["name"]
    assert sa["namespace"] == NAMESPACE
    subject = {"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}
    cluster_role = one(docs, "ClusterRole")
    assert rule_set(cluster_role["rules"]) == rule_set(rbac.CLUSTER_RULES)
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"] and binding["subjects"] == [subject]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rule_set(role["rules"]) == rule_set(rbac.NAMESPACE_RULES)
    role_binding = one(docs, "RoleBinding")
    assert role_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert role_binding["subjects"] == [subject]


def test_metrics_service_selects_the_operator_pods_on_the_metrics_port() -> None:
    docs = render("defaults")
    service = metrics_service(docs)
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    assert container_ports[port["targetPort"]] == parsed_args(docs).metrics_port == port["port"]
    assert not find(docs, "ServiceMonitor") and not find(docs, "PrometheusRule")


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar_and_holds_the_panels() -> None:
    config_map = one(render("defaults"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(config_map["data"]["carbonshift.json"])
    titles = [p["title"] for p in board["panels"]]
    for wanted in ("Grid carbon intensity", "by phase", "energy per namespace", "Emissions per namespace",
                   "Avoided emissions", "budget use", "Provider"):  # fmt: skip
        assert any(wanted.lower() in t.lower() for t in titles), (wanted, titles)
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert all(re.search(r"\bcarbonshift_\w+", e) for e in exprs)
    # Panels do not overlap on Grafana's 24-column grid.
    cells = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


# -- other value sets ------------------------------------------------------------------------------------------------
def test_metrics_off_serves_no_metrics_and_creates_no_service_or_servicemonitor() -> None:
    docs = render("metrics-off")
    assert parsed_args(docs).metrics_port == 0
    assert "metrics" not in {p["name"] for p in operator_container(docs)["ports"]}
    assert not [d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]
    assert not find(docs, "ServiceMonitor")


def test_servicemonitor_scrapes_the_metrics_service_by_its_labels() -> None:
    docs = render("servicemonitor")
    monitor = one(docs, "ServiceMonitor")
    service = metrics_service(docs)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_prometheusrule_alerts_on_metrics_the_operator_declares() -> None:
    from carbonshift import metrics

    declared = {m.name for m in metrics.REGISTRY.collect()}  # counters without _total, histograms without _count
    rule = one(render("prometheusrule"), "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"CarbonshiftBudgetExceeded", "CarbonshiftProviderDown", "CarbonshiftProviderDegraded",
            "CarbonshiftDeadlineAtRisk", "CarbonshiftOperatorDown"} <= set(alerts)  # fmt: skip
    for name, expr in alerts.items():
        used = set(re.findall(r"\b(carbonshift_\w+)", expr))
        assert used or name == "CarbonshiftOperatorDown", name
        for metric in used:
            base = re.sub(r"_(total|count|bucket|sum)$", "", metric)
            assert metric in declared or base in declared, (name, metric)
    # OperatorDown watches the job a ServiceMonitor gives the metrics Service: the Service's name.
    assert (
        alerts["CarbonshiftOperatorDown"]
        == f'absent(up{{job="{metrics_service(render("prometheusrule"))["metadata"]["name"]}"}} == 1)'
    )


def test_existing_secret_reaches_the_provider_code_as_files(tmp_path: Path) -> None:
    docs = render("existing-secret")
    container = operator_container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    args = parsed_args(docs)
    assert args.providers == "electricitymaps,watttime"
    # Keys are mounted from the Secret, read-only; the environment holds only file paths.
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "grid-keys"
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert not {"ELECTRICITYMAPS_API_TOKEN", "WATTTIME_USERNAME", "WATTTIME_PASSWORD"} & set(env)
    # Lay the Secret's items out as the kubelet would (under tmp_path) and let the real config code read them.
    local_env = dict(env)
    for item in volume["secret"]["items"]:
        path = tmp_path / item["path"]
        path.write_text(f"value-of-{item['key']}\n")
    for var, value in env.items():
        if var.endswith("_FILE"):
            assert value.startswith(mount["mountPath"] + "/")
            local_env[var] = str(tmp_path / value.removeprefix(mount["mountPath"] + "/"))
    for name in args.providers.split(","):
        provider = api_provider_from_env(name, local_env)
        assert "value-of" not in repr(provider)
    assert env["WATTTIME_SIGNAL_TYPE"] == "co2_aoer"


def test_namespace_scoped_operator_gets_namespaced_rights_only_in_its_namespaces() -> None:
    docs = render("namespace-scoped")
    assert parsed_args(docs).namespace == ["ml-research", "ml-prod"]
    roles = {r["metadata"]["name"]: r for r in find(docs, "ClusterRole")}
    assert len(roles) == 2
    bindings = find(docs, "RoleBinding")
    watched = [b for b in bindings if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in watched) == ["ml-prod", "ml-research"]
    namespaced = roles[watched[0]["roleRef"]["name"]]
    cluster = one(docs, "ClusterRoleBinding")
    cluster_scoped = roles[cluster["roleRef"]["name"]]
    # Together they grant exactly rbac.CLUSTER_RULES, split by the resources' scope.
    assert rule_set(namespaced["rules"]) | rule_set(cluster_scoped["rules"]) == rule_set(rbac.CLUSTER_RULES)
    assert not rule_set(namespaced["rules"]) & rule_set(cluster_scoped["rules"])
    assert {r for _, r, _ in rule_set(cluster_scoped["rules"])} == {
        "nodes", "namespaces", "customresourcedefinitions", "clusterkopfpeerings",
        "computeclusters", "computeclusters/status", "subjectaccessreviews", "validatingwebhookconfigurations",
        "carbonwindowpolicies", "admissionchecks", "admissionchecks/status", "clusterqueues",
        "mutatingwebhookconfigurations", "clustertrainingruntimes",
    }  # fmt: skip
    # One KopfPeering per watched namespace, none cluster-wide.
    assert sorted(p["metadata"]["namespace"] for p in find(docs, "KopfPeering")) == ["ml-prod", "ml-research"]
    assert not find(docs, "ClusterKopfPeering")


def test_everything_switched_on_renders_flags_the_operator_accepts() -> None:
    docs = render("everything")
    args = parsed_args(docs)
    assert (args.providers, args.no_trace_fallback, args.forecast, args.verbose) == (
        "gb-carbon-intensity", True, "gaussian:5%", True
    )  # fmt: skip
    assert args.trace == ["DE=/data/de.csv"]
    # The DCGM energy reader finds Prometheus through the environment variable the chart sets.
    env = {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}
    meter = meter_from_env(env)
    assert meter is not None and meter.scrape_seconds == 15.0 and meter.refresh_seconds == 10.0
    assert meter_from_env({k: v for k, v in env.items() if k != PROMETHEUS_URL_ENV}) is None
    assert operator_container(docs)["image"] == "ghcr.io/carbonshift/carbonshift@sha256:" + "a" * 64
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    assert not find(docs, "CustomResourceDefinition") and not find(docs, "ClusterKopfPeering")
    assert one(docs, "ConfigMap")["metadata"]["namespace"] == "monitoring"
    rule = one(docs, "PrometheusRule")
    down = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "CarbonshiftOperatorDown")
    assert down["expr"] == 'absent(up{job="carbonshift"} == 1)'


# -- the schema ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": 3}, "replicas"),
        ({"operator": {"zones": ["DE"]}}, "zones"),
        ({"metrics": {"prot": 9090}}, "prot"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"operator": {"providers": ["electricity-maps"]}}, "providers"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"operator": {"tick": "five minutes"}}, "tick"),
        ({"providerSecret": {"keys": {"ELECTRICITYMAPS_TOKEN": "k"}}}, "ELECTRICITYMAPS_TOKEN"),
        ({"prometheusRule": {"for": {"deadlineAtRsk": "5m"}}}, "deadlineAtRsk"),
    ],
)
def test_schema_refuses_unknown_and_malformed_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmError, match=rf"(?s)values don't meet the specifications of the schema.*{complaint}"):
        render_chart(values)


@pytest.mark.parametrize(
    ("spec", "admitted"),
    [
        ("persistence", True), ("realistic", True), ("realistic:0.5", True), ("realistic:2x", True),
        ("gaussian:0.05", True), ("gaussian:5%", True), ("oracle", True),
        ("realistic:fast", False), ("realistic:", False), ("gaussian", False), ("persistence:1", False),
        ("weather", False),
    ],
)  # fmt: skip
def test_schema_admits_the_forecast_models_the_operator_parses_and_no_others(spec: str, admitted: bool) -> None:
    # `helm install --set operator.forecast=...` must fail where the operator would refuse to start, and pass every
    # model it runs (the realistic model was refused by the chart while the operator ran it).
    schema = json.loads((CHART / "values.schema.json").read_text())
    pattern = schema["properties"]["operator"]["properties"]["forecast"]["pattern"]
    assert bool(re.search(pattern, spec)) is admitted
    if admitted:
        parse_forecast_model(spec)
    else:
        with pytest.raises(ForecastSpecError):
            parse_forecast_model(spec)


def test_schema_is_strict_everywhere_and_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        assert node.get("description") or path == "", f"{path}: no description"
        if "properties" in node:
            assert node["additionalProperties"] is False, path
            assert set(value) <= set(node["properties"]), path
            for key, child in value.items():
                walk(node["properties"][key], child, f"{path}.{key}".lstrip("."))

    walk(schema, values, "")
    assert schema["additionalProperties"] is False


# -- the image -------------------------------------------------------------------------------------------------------
def test_dockerfile_runs_the_operator_as_non_root_from_the_lockfile_with_a_pinned_base() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=docker.io/library/python:3\.11\.\d+-slim-bookworm$", dockerfile, re.M)
    assert re.search(r"^ARG UV_IMAGE=ghcr.io/astral-sh/uv:\d+\.\d+\.\d+$", dockerfile, re.M)
    assert 'ENTRYPOINT ["carbonshift", "run"]' in dockerfile
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M)
    assert "uv sync --locked --no-dev" in dockerfile
    # Everything the build copies from the context exists and is let through by .dockerignore.
    allowed = [
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert path in allowed, path
            assert (REPO / path).exists(), path
    # The chart's run-as user is the image's.
    pod = one(render("defaults"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532


# -- the admission webhook -------------------------------------------------------------------------------------------
def test_webhook_is_on_by_default_behind_a_service_with_an_operator_managed_certificate() -> None:
    docs = render("defaults")
    args = parsed_args(docs)
    assert args.webhook is True
    service = next(d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-webhook"))
    assert args.webhook_service == f"{NAMESPACE}/{service['metadata']['name']}:443"
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    deployment = one(docs, "Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    assert ports["webhook"] == args.webhook_port == 9443
    assert args.webhook_tls_secret == f"{NAMESPACE}/{service['metadata']['name']}-tls"
    # The configuration is the chart's (so `helm uninstall` removes it), empty until kopf in the operator fills it.
    config = one(docs, "ValidatingWebhookConfiguration")
    assert config["webhooks"] == [] and config["metadata"]["name"] == args.webhook_configuration
    env = {e["name"]: e for e in operator_container(docs)["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # The options parse into what the webhook server uses.
    options = run_command.webhook_options(args)
    assert options.service == (NAMESPACE, service["metadata"]["name"], 443)
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in options.hostnames()
    # The ServiceAccount may review access, keep the configuration and write the TLS Secret.
    rules = rule_set(rbac.CLUSTER_RULES)
    assert ("authorization.k8s.io", "subjectaccessreviews", "create") in rules
    assert {
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", v) for v in ("create", "patch")
    } <= rules
    assert ("", "secrets", "create") in rule_set(rbac.NAMESPACE_RULES)


def test_webhook_off_renders_no_service_nor_configuration() -> None:
    docs = render("webhook-off")
    assert parsed_args(docs).webhook is False
    assert not find(docs, "ValidatingWebhookConfiguration")
    assert not [d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-webhook")]


def test_cert_manager_issues_the_certificate_the_operator_reads_from_files() -> None:
    docs = render("webhook-cert-manager")
    args = parsed_args(docs)
    assert args.webhook_cert_dir == "/etc/carbonshift/webhook-tls" and args.webhook_tls_secret is None
    certificate = one(docs, "Certificate")
    issuer = one(docs, "Issuer")
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    service = next(d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-webhook"))
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    mount = next(m for m in operator_container(docs)["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount["mountPath"] == args.webhook_cert_dir
