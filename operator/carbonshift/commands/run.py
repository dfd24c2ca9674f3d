"""`carbonshift run`: the operator. Reads its settings from flags and the environment, then runs kopf.

Providers: `--providers electricitymaps,watttime` (keys from the environment or mounted Secret files, never logged),
then the bundled trace of each zone unless `--no-trace-fallback`. With no API provider the bundled traces replay
the same date a year earlier, with the forecast model of `--forecast` (persistence by default: honest, no
look-ahead; `oracle` is for demos and is labelled as such).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import prometheus_client
from kubernetes import client, config

from carbonshift.adapters.carbon.base import CarbonProvider
from carbonshift.adapters.carbon.cache import CachedProvider
from carbonshift.adapters.carbon.config import api_provider_from_env
from carbonshift.adapters.carbon.errors import ProviderConfigError
from carbonshift.adapters.carbon.trace import TraceProvider
from carbonshift.adapters.clock import Clock
from carbonshift.adapters.intensity import ZoneForecasts
from carbonshift.adapters.kube import Kube
from carbonshift.api.durations import parse_duration
from carbonshift.domain.forecasting import ForecastSpecError, parse_forecast_model
from carbonshift.handlers.energy import DEFAULT_SCRAPE_SECONDS, SCRAPE_INTERVAL_ENV, build_meter
from carbonshift.handlers.state import OperatorState, Settings, install
from carbonshift.metrics import RECONCILE_SECONDS as REGISTRY_RECONCILE
from carbonshift.metrics import REGISTRY

log = logging.getLogger("carbonshift")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig file (default: in-cluster)")
    parser.add_argument(
        "--namespace", action="append", default=[], help="watch this namespace (repeat); default: all namespaces"
    )
    parser.add_argument("--zone", default=env("CARBONSHIFT_ZONE", "DE"), help="grid zone of the local cluster")
    parser.add_argument("--pue", type=float, default=float(env("CARBONSHIFT_PUE", "1.2")), help="PUE of it")
    parser.add_argument(
        "--providers",
        default=env("CARBONSHIFT_PROVIDERS", ""),
        help="comma-separated API providers in fallback order: electricitymaps, watttime, carbon-aware-sdk, "
        "gb-carbon-intensity (default: none, bundled traces only)",
    )
    parser.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="ZONE=PATH",
        help="use this CSV (timestamp,gco2_per_kwh) as the trace of ZONE instead of the bundled one (repeat)",
    )
    parser.add_argument(
        "--no-trace-fallback", action="store_true", help="do not fall back to the bundled trace of a zone"
    )
    parser.add_argument(
        "--forecast",
        default=env("CARBONSHIFT_FORECAST", "persistence"),
        help="forecast model for traces: persistence, gaussian:E, oracle, file:PATH",
    )
    parser.add_argument("--tick", default=env("CARBONSHIFT_TICK", "5m"), help="re-plan at least this often")
    parser.add_argument("--margin", default=env("CARBONSHIFT_MARGIN", "10m"), help="spare time before deadlines")
    parser.add_argument(
        "--capacity-refresh",
        default=env("CARBONSHIFT_CAPACITY_REFRESH", "10s"),
        help="how long a cluster's free-GPU count is reused before it is listed again (wall clock; default 10s)",
    )
    parser.add_argument(
        "--max-concurrent-reconciles",
        type=int,
        default=int(env("CARBONSHIFT_MAX_CONCURRENT_RECONCILES", "32")),
        help="CarbonAwareJobs reconciled at once (default 32); the others wait their turn. Bounds the operator's "
        "memory when many jobs wake together",
    )
    parser.add_argument(
        "--clock",
        default=env("CARBONSHIFT_CLOCK", ""),
        help="accelerated planning clock for demos and tests: speed=S,epoch=RFC3339[,anchor=UNIX_SECONDS]",
    )
    parser.add_argument("--peering", default=env("CARBONSHIFT_PEERING", "carbonshift"), help="kopf peering name")
    parser.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    parser.add_argument(
        "--priority",
        type=int,
        default=int(env("CARBONSHIFT_PRIORITY", "0")) or random.randint(1, 1_000_000),
        help="peering priority: of several replicas the highest acts, the others wait (default: random, so that "
        "two replicas never tie and pause each other)",
    )
    parser.add_argument(
        "--liveness", default=env("CARBONSHIFT_LIVENESS", "http://0.0.0.0:8080/healthz"), help="liveness endpoint"
    )
    parser.add_argument(
        "--prometheus-url",
        default=env("CARBONSHIFT_PROMETHEUS_URL", ""),
        help="Prometheus that scrapes dcgm-exporter: measured GPU energy for receipts (default: estimates only)",
    )
    parser.add_argument(
        "--dcgm-scrape-interval",
        default=env(SCRAPE_INTERVAL_ENV, f"{DEFAULT_SCRAPE_SECONDS:g}s"),
        help="how often that Prometheus scrapes dcgm-exporter (default 30s): the operator reads at most this often, "
        "waits two intervals after a job stops before its receipt, and estimates gaps longer than four",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("CARBONSHIFT_METRICS_PORT", "9090")),
        help="serve Prometheus metrics on this port at /metrics (0: off)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def _api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig:
        api: client.ApiClient = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        return api
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def build_state(args: argparse.Namespace) -> OperatorState:
    """Everything the handlers need; raises ValueError or ProviderConfigError with a one-line reason."""
    clock = Clock.parse(args.clock)
    model = parse_forecast_model(args.forecast)
    # API providers are cached to their resolution: one request per zone per slot, however many jobs plan.
    providers: list[CarbonProvider] = [
        CachedProvider(api_provider_from_env(name.strip(), os.environ))
        for name in args.providers.split(",")
        if name.strip()
    ]

    files: dict[str, str] = {}
    for item in args.trace:
        zone, sep, path = item.partition("=")
        if not sep or not zone or not path:
            raise ValueError(f"--trace {item!r}: expected ZONE=PATH")
        files[zone] = path

    def trace_for(zone: str) -> CarbonProvider:
        if zone in files:
            return TraceProvider.from_csv(files[zone], zone, forecast_model=model, replay=True)
        return TraceProvider.bundled(zone, forecast_model=model, replay=True)

    settings = Settings(
        zone=args.zone,
        pue=args.pue,
        tick=parse_duration(args.tick),
        margin=parse_duration(args.margin),
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        capacity_ttl_seconds=parse_duration(args.capacity_refresh).total_seconds(),
    )
    if settings.max_concurrent_reconciles < 1:
        raise ValueError(f"--max-concurrent-reconciles must be at least 1, not {settings.max_concurrent_reconciles}")
    forecasts = ZoneForecasts(providers, None if args.no_trace_fallback else trace_for)
    scrape = parse_duration(args.dcgm_scrape_interval).total_seconds()
    meter = build_meter(args.prometheus_url, scrape_seconds=scrape) if args.prometheus_url else None
    return OperatorState(settings, clock, Kube("local", _api_client(args.kubeconfig)), forecasts, meter)


def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base in annotations: the status belongs to carbonshift's schema alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="carbonshift.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="carbonshift.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own events explain decisions; kopf's would be noise
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per handler success
    try:
        state = build_state(args)
    except (ValueError, ProviderConfigError, ForecastSpecError, config.ConfigException) as exc:
        print(f"carbonshift run: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # read by kopf.login_with_kubeconfig
    install(state)
    if args.metrics_port:
        for outcome in ("ok", "error"):  # both series exist from the start, so error rates read 0, not "no data"
            REGISTRY_RECONCILE.labels(outcome)
        prometheus_client.start_http_server(args.metrics_port, registry=REGISTRY)
    import carbonshift.handlers.carbonawarejob
    import carbonshift.handlers.clusters
    import carbonshift.handlers.energybudget

    if _serves_kueue(state.local.api):  # the carbon-window AdmissionCheck (docs/kueue.md); none without Kueue
        import carbonshift.handlers.kueue  # noqa: F401

    if os.environ.get("CARBONSHIFT_TRACEMALLOC"):
        _memory_report_on_sigusr1(Path(os.environ["CARBONSHIFT_TRACEMALLOC"]))
    kopf.on.startup()(configure_kopf)
    # Log kopf in with the same credentials as our client: the given kubeconfig, else the pod's ServiceAccount.
    base = kopf.login_with_kubeconfig if args.kubeconfig else kopf.login_with_service_account
    kopf.on.login()(bounded_login(base, watches=8 * max(len(args.namespace or []), 1)))
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


def _serves_kueue(api: client.ApiClient) -> bool:
    """Whether the API server serves Kueue's v1beta2 API (checked once at start: install Kueue, then restart)."""
    try:
        groups = client.ApisApi(api).get_api_versions().groups or []
    except Exception:  # discovery failed: kopf reports the API server's state itself
        return False
    return any(g.name == "kueue.x-k8s.io" and any(v.version == "v1beta2" for v in g.versions) for g in groups)


def _memory_report_on_sigusr1(path: Path) -> None:
    """A diagnostic: with CARBONSHIFT_TRACEMALLOC=FILE, SIGUSR1 writes the 40 largest allocation sites to FILE."""
    import signal
    import tracemalloc

    tracemalloc.start(8)

    def report(*_: object) -> None:
        stats = tracemalloc.take_snapshot().statistics("traceback")
        lines = []
        for stat in stats[:40]:
            lines.append(f"{stat.size / 2**20:8.1f} MiB {stat.count:8d} blocks")
            lines += [f"    {line}" for line in stat.traceback.format()[-8:]]
        path.write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, report)


def bounded_login(base: Callable[..., kopf.ConnectionInfo | None], watches: int) -> Callable[..., Any]:
    """kopf's own session opens connections without limit (aiohttp limit=0): when a thousand windows opened at
    once it held ~280 TLS connections, 256 KiB of buffer each (memray), and paid a handshake for each. Same
    credentials, a bounded pool: room for every watch stream (`watches`) plus 100 for patches and events."""

    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        info = base(**kwargs)
        if info is None:
            return None
        connector = aiohttp.TCPConnector(limit=watches + 100, ssl=info.as_ssl_context())
        session = aiohttp.ClientSession(
            connector=connector, headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env
        )
        return kopf.AiohttpSession(
            server=info.server,
            default_namespace=info.default_namespace,
            priority=info.priority,
            expiration=info.expiration,
            aiohttp_session=session,
        )

    return login
