"""The validating admission webhook for CarbonAwareJob, EnergyBudget and ComputeCluster, served by the operator.

Built on kopf's admission support: `@kopf.on.validate` handlers, kopf's HTTPS `WebhookServer`, and kopf managing the
`ValidatingWebhookConfiguration` (`settings.admission.managed`): it creates the object when absent and patches its
webhooks (rules, address, CA bundle) on every start and every certificate change. What carbonshift adds:

- the checks (handlers/validation.py, domain/validation.py);
- the TLS certificate (adapters/tls.py): a private CA and a 90-day serving certificate, kept in a Secret of the
  operator's namespace so every replica serves the same one (`--webhook-tls-secret`), renewed by the operator when
  a third of its life is left (checked hourly); or in memory for a single local process; or files from
  cert-manager or any other issuer (`--webhook-cert-dir`: tls.crt, tls.key, ca.crt), re-read when they change;
- the address: a Service in front of the operator pods (`--webhook-service`, what the chart uses), or a URL
  (`--webhook-host`, e.g. the loopback address when the operator runs as a local process next to the API server).

Failure policy: Fail, and the webhooks stay registered when the operator stops (kopf's `persistent`): while no
replica answers, creating or changing these objects is refused ("failed calling webhook"), so nothing the checks
would refuse slips in during an upgrade or an outage. docs/install.md says how to remove the configuration when
uninstalling. Deleting is never checked, and only spec changes are: the operator's own patches (finalizers, kopf's
annotations) pass untouched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.tls import TlsBundle, renewed
from carbonshift.api.base import GROUP, VERSION
from carbonshift.domain.validation import budget_problems, cluster_problems
from carbonshift.handlers import validation
from carbonshift.handlers.state import current

log = logging.getLogger(__name__)
DEFAULT_CONFIGURATION = "carbonshift.io"
SECRET_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True)
class WebhookOptions:
    """`carbonshift run --webhook ...` (commands/run.py)."""

    port: int = 9443
    address: str = "0.0.0.0"  # where to listen: every interface in a pod
    host: str | None = None  # the name or IP the API server reaches the webhook by (a URL), when no Service
    service: tuple[str, str, int] | None = None  # namespace, name, port of a Service in front of the operator
    tls_secret: tuple[str, str] | None = None  # namespace, name of the Secret the operator keeps the TLS in
    cert_dir: Path | None = None  # tls.crt, tls.key, ca.crt from another issuer (cert-manager)
    configuration: str = DEFAULT_CONFIGURATION  # name of the ValidatingWebhookConfiguration kopf keeps
    operator_namespace: str | None = None  # where the operator reads Secrets (ComputeCluster kubeconfigs)
    renew_check_seconds: float = 3600.0

    def hostnames(self) -> list[str]:
        names = []
        if self.service is not None:
            namespace, name, _ = self.service
            names += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}"]
        if self.host:
            names.append(self.host)
        return names or ["127.0.0.1"]


_options = WebhookOptions()


# -- the checks ------------------------------------------------------------------------------------------------------
def _spec_unchanged(operation: str | None, body: kopf.Body, old: kopf.Body | None) -> bool:
    """An update that leaves the spec alone (finalizers, annotations, labels), or one of an object being deleted."""
    if operation != "UPDATE" or old is None:
        return False
    if body.get("metadata", {}).get("deletionTimestamp"):
        return True
    return bool(old.get("spec") == body.get("spec"))


def _times_changed(body: kopf.Body, old: kopf.Body | None) -> bool:
    keys = ("deadline", "maxDelay", "duration")
    before: dict[str, Any] = dict((old.get("spec") if old is not None else None) or {})
    after: dict[str, Any] = dict(body.get("spec") or {})
    return any(before.get(k) != after.get(k) for k in keys)


@kopf.on.validate(GROUP, VERSION, "carbonawarejobs", id="carbonawarejob", operations=["CREATE", "UPDATE"],
                  persistent=True)  # fmt: skip
async def validate_carbonawarejob(**kwargs: Any) -> None:
    body, old, operation, userinfo = kwargs["body"], kwargs.get("old"), kwargs.get("operation"), kwargs["userinfo"]
    if _spec_unchanged(operation, body, old):
        return
    state = current()
    created = state.clock.now() if operation == "CREATE" or _times_changed(body, old) else None
    problems = await validation.caj_problems(state, dict(body), user=dict(userinfo), created=created)
    if problems:
        raise kopf.AdmissionError("; ".join(message for _, message in problems), code=422)


@kopf.on.validate(GROUP, VERSION, "energybudgets", id="energybudget", operations=["CREATE", "UPDATE"],
                  persistent=True)  # fmt: skip
async def validate_energybudget(**kwargs: Any) -> None:
    body, old, operation = kwargs["body"], kwargs.get("old"), kwargs.get("operation")
    if _spec_unchanged(operation, body, old):
        return
    problems = budget_problems(dict(body.get("spec") or {}))
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


@kopf.on.validate(GROUP, VERSION, "computeclusters", id="computecluster", operations=["CREATE", "UPDATE"],
                  persistent=True)  # fmt: skip
async def validate_computecluster(**kwargs: Any) -> None:
    body, old, operation = kwargs["body"], kwargs.get("old"), kwargs.get("operation")
    if _spec_unchanged(operation, body, old):
        return
    problems = cluster_problems(dict(body.get("spec") or {}), _options.operator_namespace)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


# -- TLS ---------------------------------------------------------------------------------------------------------------
class SecretStore:
    """The TLS bundle in a Secret of the operator's namespace, shared by every replica.

    Create-if-absent and update-with-resourceVersion: of two replicas renewing at once, one wins and the other
    reads what it wrote."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.name = namespace, name

    def _read(self) -> tuple[TlsBundle | None, str | None]:
        try:
            secret = self.core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        data = secret.data or {}
        version = secret.metadata.resource_version if secret.metadata else None
        if not all(data.get(k) for k in SECRET_KEYS):
            return None, version
        raw = [base64.b64decode(data[k]) for k in SECRET_KEYS]
        return TlsBundle(*raw), version

    def _write(self, bundle: TlsBundle, version: str | None) -> None:
        values = (bundle.ca_cert, bundle.ca_key, bundle.cert, bundle.key)
        data = {k: base64.b64encode(v).decode() for k, v in zip(SECRET_KEYS, values, strict=True)}
        meta = client.V1ObjectMeta(
            name=self.name, namespace=self.namespace, resource_version=version,
            labels={"app.kubernetes.io/part-of": "carbonshift", "app.kubernetes.io/component": "webhook"},
        )  # fmt: skip
        body = client.V1Secret(metadata=meta, type="Opaque", data=data)
        if version is None:
            self.core.create_namespaced_secret(self.namespace, body)
        else:
            self.core.replace_namespaced_secret(self.name, self.namespace, body)

    def current(self, hostnames: list[str], now: datetime) -> TlsBundle:
        """The bundle to serve: the Secret's, renewed first when due (or made, when there is none)."""
        for _ in range(3):
            bundle, version = self._read()
            fresh = renewed(bundle, hostnames, now)
            if fresh is None and bundle is not None:
                return bundle
            assert fresh is not None
            try:
                self._write(fresh, version)
            except ApiException as exc:
                if exc.status == 409:  # another replica wrote first: use what it wrote
                    continue
                raise
            log.info("webhook TLS: wrote a certificate valid until %s to Secret %s/%s",
                     fresh.serving_expires().isoformat(), self.namespace, self.name)  # fmt: skip
            return fresh
        raise RuntimeError(f"webhook TLS: Secret {self.namespace}/{self.name} keeps changing under us")


class MemoryStore:
    """The TLS bundle of a single local process (tests, a development machine): made and renewed in memory."""

    def __init__(self) -> None:
        self.bundle: TlsBundle | None = None

    def current(self, hostnames: list[str], now: datetime) -> TlsBundle:
        fresh = renewed(self.bundle, hostnames, now)
        if fresh is not None:
            self.bundle = fresh
        assert self.bundle is not None
        return self.bundle


class Server(kopf.WebhookServer):
    """kopf's HTTPS webhook server, with carbonshift's certificate and, in a cluster, a Service as its address.

    kopf re-reads the certificate files every `file_check_interval` and restarts the endpoint and re-patches the
    webhook configuration when they change: renewing is writing new files."""

    def __init__(self, options: WebhookOptions, store: SecretStore | MemoryStore | None) -> None:
        self.options = options
        self.store = store
        self.workdir = Path(tempfile.mkdtemp(prefix="carbonshift-webhook-"))
        if options.cert_dir is not None:
            certfile, pkeyfile, cafile = (options.cert_dir / n for n in ("tls.crt", "tls.key", "ca.crt"))
        else:
            certfile, pkeyfile, cafile = (self.workdir / n for n in ("tls.crt", "tls.key", "ca.crt"))
        super().__init__(
            addr=options.address, port=options.port, host=options.host or options.hostnames()[0],
            certfile=certfile, pkeyfile=pkeyfile, cafile=cafile, file_check_interval=30.0,
        )  # fmt: skip

    async def _refresh(self) -> None:
        if self.store is None:
            return
        store = self.store
        bundle = await asyncio.to_thread(store.current, self.options.hostnames(), datetime.now(UTC))
        for path, content in ((self.pkeyfile, bundle.key), (self.certfile, bundle.cert), (self.cafile, bundle.ca_cert)):
            assert path is not None
            target = Path(path)
            if not target.exists() or target.read_bytes() != content:
                target.touch(mode=0o600)
                target.write_bytes(content)

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self.options.renew_check_seconds)
            try:
                await self._refresh()
            except Exception as exc:  # keep serving the current certificate; try again at the next check
                log.warning("webhook TLS: renewal check failed (%s: %s); serving the current certificate",
                            type(exc).__name__, exc)  # fmt: skip

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        await self._refresh()
        keeper = asyncio.create_task(self._keep_fresh())
        try:
            async for config in super().__call__(fn):
                yield self._client_config(dict(config))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    def _client_config(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.options.service is None:
            return config
        namespace, name, port = self.options.service
        service = {"namespace": namespace, "name": name, "port": port, "path": ""}
        return {"service": service, **({"caBundle": config["caBundle"]} if "caBundle" in config else {})}


def install(options: WebhookOptions, api: client.ApiClient) -> None:
    """Serve the webhook and have kopf keep its configuration (call before kopf starts)."""
    global _options
    _options = options
    if options.cert_dir is not None:
        store: SecretStore | MemoryStore | None = None
    elif options.tls_secret is not None:
        store = SecretStore(api, *options.tls_secret)
    else:
        store = MemoryStore()

    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = Server(options, store)
        settings.admission.managed = options.configuration

    kopf.on.startup()(configure)
