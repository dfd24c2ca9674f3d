"""`carbonshift run`: the operator. Reads its settings from flags and the environment, then runs kopf.

Providers: `--providers electricitymaps,watttime` (keys from the environment or mounted Secret files, never logged;
`gb-carbon-intensity` needs no key), then the bundled trace of each zone unless `--no-trace-fallback`.

No pretend data: with no API provider the operator refuses to start unless traces are asked for explicitly, with
`--trace ZONE=PATH` or `--demo-traces` (CARBONSHIFT_DEMO_TRACES=true; the chart's `operator.demoTraces`). Traces are
then replayed to today (shifted by whole 52-week periods) with the forecast model of `--forecast` (persistence by
default: honest, no look-ahead; `oracle` is for demos and is labelled as such), and every plan, Event and receipt
says "replayed trace of YEAR".
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
from carbonshift.handlers.forecast_store import ForecastStore
from carbonshift.handlers.state import (
    LeanDiffBaseStorage,
    LeanProgressStorage,
    OperatorState,
    Settings,
    fast_watch_json,
    install,
)
from carbonshift.metrics import RECONCILE_SECONDS as REGISTRY_RECONCILE
from carbonshift.metrics import REGISTRY

log = logging.getLogger("carbonshift")

NO_PROVIDER = (
    "no carbon-intensity provider configured: set --providers (CARBONSHIFT_PROVIDERS; the chart's operator.providers), "
    "e.g. gb-carbon-intensity, which needs no key, or electricitymaps with ELECTRICITYMAPS_API_TOKEN; or plan on "
    "recorded grid traces explicitly with --trace ZONE=PATH or --demo-traces (the chart's operator.demoTraces=true), "
    "and every plan will say 'replayed trace of YEAR'"
)


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
        "--demo-traces",
        action="store_true",
        default=env("CARBONSHIFT_DEMO_TRACES", "").strip().lower() in ("1", "true", "yes"),
        help="with no --providers, plan on the bundled grid traces replayed to today (a demo: plans, Events and "
        "receipts say 'replayed trace of YEAR'); without it, or --trace, the operator refuses to start",
    )
    parser.add_argument(
        "--forecast",
        default=env("CARBONSHIFT_FORECAST", "persistence"),
        help="forecast model for traces: persistence, realistic[:K], gaussian:E, oracle, file:PATH",
    )
    parser.add_argument("--tick", default=env("CARBONSHIFT_TICK", "5m"), help="re-plan at least this often")
    parser.add_argument("--margin", default=env("CARBONSHIFT_MARGIN", "10m"), help="spare time before deadlines")
    parser.add_argument(
        "--recheck-every",
        default=env("CARBONSHIFT_RECHECK_EVERY", "1h"),
        help="weigh a job's committed plan against newer forecasts at most this often (default 1h; 0s: at every pass)",
    )
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
    webhook = parser.add_argument_group("admission webhook (docs/install.md)")
    webhook.add_argument(
        "--webhook",
        action=argparse.BooleanOptionalAction,
        default=env("CARBONSHIFT_WEBHOOK", "") in ("1", "true"),
        help="serve the validating admission webhook and keep its ValidatingWebhookConfiguration (the chart turns "
        "it on); without it the operator flags a bad CarbonAwareJob with InvalidSpec on its first pass",
    )
    webhook.add_argument("--webhook-port", type=int, default=9443, help="port the webhook listens on (HTTPS)")
    webhook.add_argument("--webhook-address", default="0.0.0.0", help="address it listens on")
    webhook.add_argument(
        "--webhook-host", default=None, help="name or IP the API server reaches it by, as a URL (no Service)"
    )
    webhook.add_argument(
        "--webhook-service", default=None, metavar="NAMESPACE/NAME[:PORT]", help="the Service in front of the operator"
    )
    webhook.add_argument(
        "--webhook-tls-secret",
        default=None,
        metavar="NAMESPACE/NAME",
        help="keep the webhook's CA and certificate in this Secret, made and renewed by the operator (default: in "
        "memory, for a single local process)",
    )
    webhook.add_argument(
        "--webhook-cert-dir", default=None, help="use tls.crt, tls.key and ca.crt from this directory (cert-manager)"
    )
    webhook.add_argument(
        "--webhook-configuration", default="carbonshift.io", help="name of the ValidatingWebhookConfiguration"
    )
    webhook.add_argument(
        "--adoption",
        action=argparse.BooleanOptionalAction,
        default=env("CARBONSHIFT_ADOPTION", "") in ("1", "true"),
        help="with --webhook: adopt labelled Jobs, JobSets, TrainJobs, PyTorchJobs and RayJobs (created suspended by a "
        "mutating webhook, tracked by a CarbonAwareJob; docs/workloads.md); its MutatingWebhookConfiguration has the "
        "--webhook-configuration name",
    )
    webhook.add_argument(
        "--operator-namespace",
        default=env("POD_NAMESPACE", "carbonshift-system"),
        help="the operator's namespace, where ComputeCluster kubeconfig Secrets must be and where each zone's recorded "
        "forecasts are kept (ConfigMaps carbonshift-forecasts-*)",
    )
    parser.add_argument(
        "--keep-forecasts",
        action=argparse.BooleanOptionalAction,
        default=env("CARBONSHIFT_KEEP_FORECASTS", "true") not in ("0", "false"),
        help="keep each zone's recorded forecasts (do no harm's measured error and shown skill) across restarts, in "
        "ConfigMaps of --operator-namespace (default: on)",
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
        recheck_every=parse_duration(args.recheck_every),
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        capacity_ttl_seconds=parse_duration(args.capacity_refresh).total_seconds(),
        # Traces price receipts only when chosen: --trace given, or no API provider (traces are all it was told).
        receipts_on_traces=bool(args.trace) or not providers,
    )
    if settings.max_concurrent_reconciles < 1:
        raise ValueError(f"--max-concurrent-reconciles must be at least 1, not {settings.max_concurrent_reconciles}")
    if not providers and not args.trace and not args.demo_traces:
        raise ValueError(NO_PROVIDER)
    forecasts = ZoneForecasts(providers, None if args.no_trace_fallback else trace_for)
    scrape = parse_duration(args.dcgm_scrape_interval).total_seconds()
    meter = build_meter(args.prometheus_url, scrape_seconds=scrape) if args.prometheus_url else None
    local = Kube("local", _api_client(args.kubeconfig))
    state = OperatorState(settings, clock, local, forecasts, meter)
    if args.keep_forecasts and args.operator_namespace:  # each zone's recorded forecasts, kept across restarts
        state.forecast_store = ForecastStore(local, args.operator_namespace)
    return state


def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base in annotations: the status belongs to carbonshift's schema alone.
    settings.persistence.progress_storage = LeanProgressStorage(prefix="carbonshift.io")  # no deep copy per event
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(  # kopf's, without its deep copy of every body
        prefix="carbonshift.io", key="last-handled-configuration"
    )
    fast_watch_json()  # kopf's watch events decoded by orjson
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
        if args.webhook:
            webhook_options(args)
        elif args.adoption:
            raise ValueError(
                "--adoption needs --webhook: the adoption webhook is served by the operator's webhook server"
            )
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

    # Watch each workload kind the cluster serves (checked once at start: install a kind's CRD, then restart).
    served = _served(state.local.api, carbonshift.handlers.carbonawarejob.OPTIONAL_KINDS)
    carbonshift.handlers.carbonawarejob.watch_workloads(served)

    if _serves_kueue(state.local.api):  # the carbon-window AdmissionCheck (docs/kueue.md); none without Kueue
        import carbonshift.handlers.kueue

    if args.webhook:
        from carbonshift.handlers import admission  # registers the validating handlers

        options = webhook_options(args)
        also: tuple[Callable[[dict[str, Any]], None], ...] = ()
        if args.adoption:
            from carbonshift.handlers import adoption  # the mutating webhook and the tracking handlers

            also = (adoption.install(state.local.api, options.configuration, served),)
        admission.install(options, state.local.api, also)

    if os.environ.get("CARBONSHIFT_TRACEMALLOC"):
        _memory_report_on_sigusr1(Path(os.environ["CARBONSHIFT_TRACEMALLOC"]))
    kopf.on.startup()(configure_kopf)
    # Log kopf in with the same credentials and server as our client: the given kubeconfig, else the in-cluster
    # config (KUBERNETES_SERVICE_HOST/PORT and the pod's ServiceAccount). Not kopf.login_with_service_account: it
    # hard-codes https://kubernetes.default.svc, so kopf alone would depend on cluster DNS (found by running the
    # image, tests/integration/test_image.py).
    base = kopf.login_with_kubeconfig if args.kubeconfig else kopf.login_via_client
    kopf.on.login()(bounded_login(base, watches=8 * max(len(args.namespace or []), 1)))
    operator = kopf.operator(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
    )
    asyncio.run(_with_quiet_shutdown(operator))
    return 0


async def _with_quiet_shutdown(operator: Any) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_shutdown_handler)
    await operator


def quiet_shutdown_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's error handler: one warning line, not a traceback, for kopf's watch stream failing to close
    when the operator stops while the stream is still opening ("generator didn't stop after athrow()", from kopf's
    own `infinite_watch` as asyncio closes the generators left at exit: found when an operator got SIGTERM a second
    after it started). Nothing is lost then: the process is exiting. Everything else goes to asyncio's default."""
    agen, exc = context.get("asyncgen"), context.get("exception")
    code = getattr(agen, "ag_code", None)
    if isinstance(exc, RuntimeError) and code is not None and f"{os.sep}kopf{os.sep}" in code.co_filename:
        log.warning("at shutdown, kopf's %s did not close cleanly (%s); nothing is lost", code.co_name, exc)
        return
    loop.default_exception_handler(context)


def webhook_options(args: argparse.Namespace) -> Any:
    """The `--webhook-*` flags as handlers.admission.WebhookOptions; ValueError names a malformed one."""
    from carbonshift.handlers.admission import WebhookOptions

    service = None
    if args.webhook_service:
        namespace, sep, rest = args.webhook_service.partition("/")
        name, _, port = rest.partition(":")
        if not sep or not namespace or not name or (port and not port.isdigit()):
            raise ValueError(f"--webhook-service {args.webhook_service!r}: expected NAMESPACE/NAME[:PORT]")
        service = (namespace, name, int(port or 443))
    secret = None
    if args.webhook_tls_secret:
        namespace, sep, name = args.webhook_tls_secret.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"--webhook-tls-secret {args.webhook_tls_secret!r}: expected NAMESPACE/NAME")
        secret = (namespace, name)
    return WebhookOptions(
        port=args.webhook_port,
        address=args.webhook_address,
        host=args.webhook_host,
        service=service,
        tls_secret=secret,
        cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        configuration=args.webhook_configuration,
        operator_namespace=args.operator_namespace,
    )


def _serves_kueue(api: client.ApiClient) -> bool:
    """Whether the API server serves Kueue's v1beta2 API (checked once at start: install Kueue, then restart)."""
    try:
        groups = client.ApisApi(api).get_api_versions().groups or []
    except Exception:  # discovery failed: kopf reports the API server's state itself
        return False
    return any(g.name == "kueue.x-k8s.io" and any(v.version == "v1beta2" for v in g.versions) for g in groups)


def _served(api: client.ApiClient, kinds: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The (group, version, plural) of `kinds` the API server serves (discovery; none when it fails)."""
    served = []
    for group, version, plural in kinds:
        try:
            found = client.CustomObjectsApi(api).get_api_resources(group, version)
        except Exception:  # not served (404), or discovery failed: kopf reports the API server's state itself
            continue
        if any(r.name == plural for r in (found.resources or [])):
            served.append((group, version, plural))
    return served


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
