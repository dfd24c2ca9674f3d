"""`make demo` (`python -m carbonshift_dev demo`): the whole product on this machine, with no account and no
cluster of your own.

It starts two real control planes (API server, etcd, Job controller, scheduler, kwok GPU nodes) standing for
clusters in Germany (DE) and Great Britain (GB), the operator under its least-privilege ServiceAccount, the
bundled grid traces of both zones as its carbon provider (forecasts with simulated 5% error: no oracle), the
measured H100 run replayed as dcgm-exporter on every GPU, and a real Prometheus scraping it. Example
CarbonAwareJobs (interruptible, not interruptible, threshold, immediate, and one whose team's EnergyBudget runs out)
then play out with planning time accelerated (default: a day in two minutes). A live table shows the jobs; at the
end come the receipts, a JSON report and a plot, and everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from carbonshift.api.durations import parse_duration
from carbonshift.domain.accounting import receipt_from_status

NAMESPACE = "ml-research"
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "carbonshift" / "dashboards" / "carbonshift.json"
# The traces' forecasts: the simulator's default model, whose error grows with lead time as NESO's published forecasts'
# does (docs/reproduction.md), not the paper's 5 % white noise, which averages out over a block and flatters a plan.
DEMO_FORECAST = "realistic"
DEMO_FORECAST_LABEL = "simulated, error fitted on NESO's forecasts"


def crd_documents() -> list[dict[str, Any]]:
    """The CRDs, generated from the installed operator's API models (what `carbonshift crds` writes to crds/), so
    the demo needs no source tree for them."""
    from carbonshift.api.crdgen import render_all

    return [
        doc for text in render_all().values() if (doc := yaml.safe_load(text))["kind"] == "CustomResourceDefinition"
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed", type=float, default=720.0, help="planning seconds per wall second (720: a day in 2 min)"
    )
    parser.add_argument("--hours", type=float, default=30.0, help="planning hours to play at most")
    parser.add_argument("--out-dir", type=Path, default=Path("out/demo"), help="where the report and plot go")
    parser.add_argument("--no-live", action="store_true", help="print progress lines instead of a live table")


def _job(name: str, duration: str, max_delay: str, gpus: int, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    return {
        "apiVersion": "carbonshift.io/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "duration": duration,
            "maxDelay": max_delay,
            **spec,
            "template": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "train",
                                    "image": "example/train:1",
                                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                                }
                            ],
                        }
                    },
                }
            },
        },
    }


CHECKPOINT = {"overhead": "2m", "gracePeriod": "5m", "minRunDuration": "1h"}
JOBS = [
    _job("nightly-finetune", "4h", "20h", 2),
    _job("pretrain", "12h", "30h", 8, interruptible=True, checkpoint=CHECKPOINT),
    _job("eval-threshold", "2h", "24h", 2, interruptible=True, policy="Threshold", maxIntensity=150),
    _job("hotfix", "1h", "3h", 1, policy="Immediate"),
    # Two sandbox jobs, 0.64 kWh each, and their team's 1 kWh daily EnergyBudget: the first is admitted at once, the
    # second is held at admission (BudgetHeld, with what is left and until when) and runs when the next day begins.
    *(
        _job(name, "1h", "30h", 1, policy="Immediate", labels={"team": "sandbox"})
        for name in ("sandbox-sweep-a", "sandbox-sweep-b")
    ),
]
BUDGET = {
    "apiVersion": "carbonshift.io/v1alpha1",
    "kind": "EnergyBudget",
    "metadata": {"name": "sandbox-daily"},
    "spec": {
        "selector": {"matchLabels": {"team": "sandbox"}},
        "period": "Daily",
        "limits": {"energyKWh": 1.0},
        "action": "Suspend",
    },
}


def list_jobs(custom: Any) -> list[dict[str, Any]]:
    listing: dict[str, Any] = custom.list_namespaced_custom_object(
        "carbonshift.io", "v1alpha1", NAMESPACE, "carbonawarejobs"
    )
    return list(listing["items"])


def _row(item: dict[str, Any], now: datetime) -> list[str]:
    status = item.get("status") or {}
    display = status.get("display") or {}
    held = next((c for c in status.get("conditions", []) if c["type"] == "BudgetHeld" and c["status"] == "True"), None)
    ran = float(status.get("runSeconds") or 0.0)
    since = status.get("runningSince")
    if since:
        ran += (now - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
    total = parse_duration(item["spec"]["duration"]).total_seconds()
    return [
        item["metadata"]["name"],
        str(status.get("phase") or "Pending") + (" (budget)" if held else ""),
        str(status.get("cluster") or "-"),
        (status.get("nextTransitionTime") or "-").replace("T", " ").replace("Z", ""),
        f"{min(ran, total) / 3600:.1f}/{total / 3600:.0f} h",
        f"{float(status.get('energyKWh') or 0):.2f} ({status.get('energySource') or '-'})",
        str(display.get("co2e") or "-"),
        str(display.get("saved") or "-"),
    ]


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        print("demo interrupted; everything it started has been stopped", file=sys.stderr)
        return 130


async def _demo(args: argparse.Namespace) -> int:
    from kubernetes import client
    from rich.live import Live
    from rich.table import Table

    from carbonshift.commands.console import report_console
    from carbonshift_dev.devcluster import ClusterConfig, DevCluster, MissingBinaryError, PrometheusServer
    from carbonshift_dev.devcluster.gpu_binder import GpuBinder, TimeLapseDcgm
    from carbonshift_dev.devcluster.operator_process import (
        OPERATOR_NAMESPACE,
        OperatorProcess,
        ensure_namespace,
        operator_kubeconfig,
    )
    from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig, install_crds
    from carbonshift_dev.devcluster.workload import Workload

    console = report_console()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="carbonshift-demo-") as tmp:
        work = Path(tmp)
        console.print(
            "[bold]carbonshift_dev demo[/]: starting two control planes (DE and GB), Prometheus and the operator"
        )
        try:
            de = stack.enter_context(
                DevCluster.start(
                    ClusterConfig(name="demo-de", nodes=2, gpus_per_node=8, zones=("de-1",), node_prefix="de-node")
                )
            )
            gb = stack.enter_context(
                DevCluster.start(
                    ClusterConfig(name="demo-gb", nodes=2, gpus_per_node=8, zones=("gb-1",), node_prefix="gb-node")
                )
            )
        except MissingBinaryError as exc:
            print(f"carbonshift_dev demo: {exc}", file=sys.stderr)
            return 2
        api_de, api_gb = api_client_from_kubeconfig(de.kubeconfig), api_client_from_kubeconfig(gb.kubeconfig)
        install_crds(api_de, crd_documents())
        for api in (api_de, api_gb):
            ensure_namespace(api, NAMESPACE)
        core, custom = client.CoreV1Api(api_de), client.CustomObjectsApi(api_de)
        config = operator_kubeconfig(api_de, de.kubeconfig, work / "operator.kubeconfig")
        secret = {
            "metadata": {"name": "gpu-gb-kubeconfig"},
            "data": {"kubeconfig": base64.b64encode(gb.kubeconfig.read_bytes()).decode()},
        }
        core.create_namespaced_secret(OPERATOR_NAMESPACE, secret)  # type: ignore[arg-type]
        ref = {"name": "gpu-gb-kubeconfig", "namespace": OPERATOR_NAMESPACE}
        # A remote cluster admits only the namespaces its administrator selects, and its Jobs go to a named one.
        remote = {"kubeconfigSecretRef": ref, "targetNamespace": NAMESPACE,
                  "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}  # fmt: skip
        for name, zone, pue, extra in (("gpu-de", "DE", 1.2, {}), ("gpu-gb", "GB", 1.1, remote)):
            body = {
                "apiVersion": "carbonshift.io/v1alpha1",
                "kind": "ComputeCluster",
                "metadata": {"name": name},
                "spec": {"zone": zone, "pue": pue, **extra},
            }
            custom.create_cluster_custom_object("carbonshift.io", "v1alpha1", "computeclusters", body)
        # GPUs replay the measured H100 run, in time-lapse with the planning clock.
        exporters = []
        for api in (api_de, api_gb):
            nodes = {str(n.metadata.name): 8 for n in client.CoreV1Api(api).list_node().items if n.metadata}
            exporter = stack.enter_context(TimeLapseDcgm(nodes, speed=args.speed, start_offset_seconds=25.0))
            binder = GpuBinder(api, exporter, nodes)
            binder.start()
            stack.callback(binder.halt.set)
            exporters.append(exporter)
        epoch = datetime.now(UTC).replace(microsecond=0)
        # --demo-traces: no provider is configured, so the bundled traces are asked for explicitly (replayed to today;
        # plans, Events and receipts say "replayed trace of YEAR").
        extra_args = ["--zone", "DE", "--demo-traces", "--forecast", DEMO_FORECAST, "--tick", "15m"]
        extra_args += ["--margin", "30m"]
        operator = OperatorProcess(config, work, speed=args.speed, epoch=epoch, extra=extra_args, keep_forecasts=True)
        # One Prometheus scrapes the GPUs (DCGM) and the operator's own metrics, as the chart's ServiceMonitor would.
        targets = [e.target for e in exporters] + [f"127.0.0.1:{operator.metrics_port}"]
        prometheus = stack.enter_context(PrometheusServer.start(targets))
        operator.extra += ["--prometheus-url", prometheus.url, "--dcgm-scrape-interval", "1s"]  # scraped every second
        operator.start()
        stack.callback(operator.stop)
        while not operator.serving():
            operator.assert_alive()
            time.sleep(0.1)
        time.sleep(1.0)
        began_wall = time.time()
        custom.create_namespaced_custom_object("carbonshift.io", "v1alpha1", NAMESPACE, "energybudgets", BUDGET)
        for manifest in JOBS:
            custom.create_namespaced_custom_object("carbonshift.io", "v1alpha1", NAMESPACE, "carbonawarejobs", manifest)
        workload = Workload(api_de, {"gpu-de": api_de, "gpu-gb": api_gb}, NAMESPACE, operator.planning_now)
        workload.start()
        stack.callback(workload.halt.set)
        end = epoch + timedelta(hours=args.hours)
        columns = ["job", "phase", "cluster", "next (UTC)", "ran", "energy kWh", "CO2e", "saved"]

        def table() -> Table:
            now = operator.planning_now()
            view = Table(
                title=f"planning time {now:%a %H:%M} UTC  (x{args.speed:.0f}; forecast: {DEMO_FORECAST_LABEL})"
            )
            for column in columns:
                view.add_column(column)
            for item in list_jobs(custom):
                view.add_row(*_row(item, now))
            return view

        checked: list[tuple[int, list[str]]] = []

        def check_dashboard_mid_run() -> None:
            """Once jobs are both running and waiting (every panel has something to show), query the dashboard."""
            if checked or operator.planning_now() < epoch + timedelta(hours=2):
                return
            items = list_jobs(custom)
            statuses = [i.get("status") or {} for i in items]
            if any(s.get("phase") == "Running" for s in statuses) and any(
                s.get("nextTransitionTime") for s in statuses
            ):
                checked.append(dashboard_check(prometheus.url, since=began_wall))

        def finished() -> bool:
            items = list_jobs(custom)
            return all((i.get("status") or {}).get("receiptPosted") for i in items)

        if args.no_live or not console.is_terminal:
            last = 0.0
            while not finished() and operator.planning_now() < end:
                operator.assert_alive()
                check_dashboard_mid_run()
                if time.monotonic() - last > 10:
                    console.print(table())
                    last = time.monotonic()
                time.sleep(0.5)
        else:
            with Live(table(), console=console, refresh_per_second=2) as live:
                while not finished() and operator.planning_now() < end:
                    operator.assert_alive()
                    check_dashboard_mid_run()
                    live.update(table())
                    time.sleep(0.5)
        items = list_jobs(custom)
        report = await _report(items, workload, epoch, operator.planning_now(), args.out_dir)
        console.print(_receipts(items))
        for item in items:  # the budget's first word on a job (its first Event), and its word now (the condition)
            name = item["metadata"]["name"]
            events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
            holds = [e for e in events if e.reason == "BudgetExhausted"]
            first = min(holds, key=lambda e: e.first_timestamp or e.event_time or datetime.min.replace(tzinfo=UTC),
                        default=None)  # fmt: skip
            conditions = (item.get("status") or {}).get("conditions") or []
            now_held = [c["message"] for c in conditions if c["type"] == "BudgetHeld" and c["status"] == "True"]
            if now_held:
                console.print(f"[yellow]{name}[/] is held: {now_held[0]}")
            elif first is not None:
                console.print(f"[yellow]{name}[/] was held, then admitted: {first.message}")
        totals = report["totals"]
        console.print(
            f"\n[bold]All jobs:[/] {totals['energy_kwh']:.1f} kWh, {totals['emissions_kg']:.2f} kgCO2e; "
            f"running each at submission in its home cluster would have emitted {totals['baseline_kg']:.2f} kg: "
            f"[bold green]{totals['avoided_kg']:.2f} kg ({totals['saved_pct']:.1f}%) avoided[/] = "
            f"temporal {totals['temporal_kg']:.2f} kg (when, same cluster) + "
            f"spatial {totals['spatial_kg']:.2f} kg (where: the cleaner cluster instead of home)"
            + (f"; {totals['unpriced_kwh']:.2f} kWh unpriced, in no figure" if totals["unpriced_kwh"] > 0 else "")
            + "."
        )
        final = dashboard_check(prometheus.url, since=began_wall)
        # A panel shows the demo's whole time range: a query counts if it returned data while jobs ran or at the end.
        empty = [t for t in final[1] if not checked or t in checked[0][1]]
        answered = final[0] + len(final[1]) - len(empty)
        report["dashboard"] = {"queries": answered + len(empty), "returned_data": answered, "empty": empty}
        (args.out_dir / "demo-report.json").write_text(json.dumps(report, indent=2))
        console.print(
            f"Grafana dashboard: {answered} of {answered + len(empty)} queries returned data, checked while jobs ran"
        )
        for title in empty:
            console.print(f"  [yellow]no data[/]: {title}")
        console.print(f"report: {args.out_dir / 'demo-report.json'}\nplot: {args.out_dir / 'demo.png'}")
        console.print("stopping the operator, Prometheus and both control planes")
    return 0


def dashboard_check(prometheus_url: str, since: float | None = None) -> tuple[int, list[str]]:
    """Run every query of the chart's Grafana dashboard against this Prometheus: (how many returned data, the rest).
    Panels are queried at this instant; annotations, as Grafana does, over the dashboard's range (from `since`)."""
    import re

    import httpx

    board = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    queries += [
        (f"annotation {a['name']}", a["expr"]) for a in board.get("annotations", {}).get("list", []) if "expr" in a
    ]
    answered, empty = 0, []
    now = time.time()
    for title, expr in queries:
        promql = re.sub(r"\$(zone|namespace)\b", ".*", expr.replace("$__rate_interval", "1m"))
        if title.startswith("annotation ") and since is not None:
            window = {"query": promql, "start": f"{since:.3f}", "end": f"{now:.3f}", "step": "1s"}
            body = httpx.get(f"{prometheus_url}/api/v1/query_range", params=window, timeout=10).json()
        else:
            body = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=10).json()
        if body.get("status") == "success" and body["data"]["result"]:
            answered += 1
        else:
            empty.append(title)
    return answered, empty


def _receipts(items: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    view = Table(title="carbon receipts (GPU energy measured through DCGM; emissions on the grid's actual intensity)")
    columns = ("job", "cluster", "phase", "energy kWh", "source", "CO2e kg", "at submission at home kg", "avoided kg")
    for column in (*columns, "temporal kg", "spatial kg"):
        view.add_column(column)
    for item in items:
        s = item.get("status") or {}
        receipt = receipt_from_status(NAMESPACE, item["metadata"]["name"], s)
        view.add_row(
            item["metadata"]["name"],
            str(s.get("cluster") or "-"),
            str(s.get("phase") or "-"),
            f"{float(s.get('energyKWh') or 0):.2f}",
            str(s.get("energySource") or "-"),
            f"{float(s.get('emissionsGrams') or 0) / 1000:.2f}",
            f"{float(s.get('baselineEmissionsGrams') or 0) / 1000:.2f}",
            f"{float(s.get('avoidedEmissionsGrams') or 0) / 1000:.2f}",
            f"{receipt.temporal_avoided_grams / 1000:.2f}",
            f"{receipt.spatial_avoided_grams / 1000:.2f}",
        )
    return view


async def _report(
    items: list[dict[str, Any]], workload: Any, begin: datetime, end: datetime, out: Path
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carbonshift.adapters.carbon.trace import TraceProvider

    jobs = []
    for item in items:
        s = item.get("status") or {}
        runs = workload.jobs.get(item["metadata"]["name"])
        receipt = receipt_from_status(NAMESPACE, item["metadata"]["name"], s)
        jobs.append(
            {
                "name": item["metadata"]["name"],
                "cluster": s.get("cluster"),
                "phase": s.get("phase"),
                "energy_kwh": s.get("energyKWh"),
                "energy_source": s.get("energySource"),
                "emissions_g": s.get("emissionsGrams"),
                "baseline_emissions_g": s.get("baselineEmissionsGrams"),
                "avoided_g": s.get("avoidedEmissionsGrams"),
                "temporal_avoided_g": round(receipt.temporal_avoided_grams, 3),
                "spatial_avoided_g": round(receipt.spatial_avoided_grams, 3),
                "home_cluster": receipt.home_cluster or s.get("cluster"),
                "unpriced_kwh": round(receipt.unpriced_kwh, 6),
                "suspensions": s.get("suspensions"),
                "runs": [[a.isoformat(), b.isoformat()] for a, b in (runs.intervals if runs else [])],
            }
        )
    emitted = sum(float(j["emissions_g"] or 0) for j in jobs) / 1000
    baseline = sum(float(j["baseline_emissions_g"] or 0) for j in jobs) / 1000
    totals = {
        "energy_kwh": sum(float(j["energy_kwh"] or 0) for j in jobs),
        "emissions_kg": emitted,
        "baseline_kg": baseline,
        "avoided_kg": baseline - emitted,
        "temporal_kg": sum(float(j["temporal_avoided_g"]) for j in jobs) / 1000,
        "spatial_kg": sum(float(j["spatial_avoided_g"]) for j in jobs) / 1000,
        "unpriced_kwh": sum(float(j["unpriced_kwh"]) for j in jobs),
        "saved_pct": 100 * (baseline - emitted) / baseline if baseline > 0 else 0.0,
    }
    report = {
        "began": begin.isoformat(),
        "ended": end.isoformat(),
        "forecast": f"{DEMO_FORECAST} ({DEMO_FORECAST_LABEL})",
        "carbon_data": "bundled grid traces replayed to today (demo): not today's grid",
        "jobs": jobs,
        "totals": totals,
    }
    (out / "demo-report.json").write_text(json.dumps(report, indent=2))
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[2, 1])
    colors = {"gpu-de": "tab:blue", "gpu-gb": "tab:green"}
    for zone, label, color in (("DE", "DE (gpu-de)", "tab:blue"), ("GB", "GB (gpu-gb)", "tab:green")):
        provider = TraceProvider.bundled(zone, replay=True)
        series = (await provider.history(zone, begin, end, end)).series
        ax.step(series.starts(), series.values, where="post", label=label, color=color)
    ax.set_ylabel("gCO2e/kWh (actual)")
    ax.legend(loc="upper right")
    ax.set_title("Grid carbon intensity and when each job ran")
    for row, job in enumerate(jobs):
        for a, b in job["runs"]:
            start, stop = datetime.fromisoformat(a), datetime.fromisoformat(b)
            bars.barh(row, stop - start, left=start, color=colors.get(job["cluster"] or "", "grey"))
    bars.set_yticks(range(len(jobs)), [j["name"] for j in jobs])
    bars.set_xlabel("UTC (planning time)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=110)
    plt.close(fig)
    return report
