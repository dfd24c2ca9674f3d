"""The validating admission webhook for CarbonAwareJob, EnergyBudget and ComputeCluster, served by the operator.

Built on kopf's admission support: `@kopf.on.validate` handlers and kopf's HTTPS `WebhookServer` (which routes each
request to its handler and restarts on new certificate files). What carbonshift adds:

- the checks (handlers/validation.py, domain/validation.py);
- the TLS certificate (adapters/tls.py): a private CA and a 90-day serving certificate, kept in a Secret of the
  operator's namespace so every replica and every restart serves the same one (`--webhook-tls-secret`), renewed by
  the operator when a third of its life is left (checked hourly); or in memory for a single local process; or files
  from cert-manager or any other issuer (`--webhook-cert-dir`: tls.crt, tls.key, ca.crt), re-read when they change;
- the address: a Service in front of the operator pods (`--webhook-service`, what the chart uses), or a URL
  (`--webhook-host`, e.g. the loopback address when the operator runs as a local process next to the API server);
- the ValidatingWebhookConfiguration, written by the operator on every start and every certificate change. Not by
  kopf's `settings.admission.managed`: kopf then also keeps a MutatingWebhookConfiguration (needing rights to
  intercept any write in the cluster, for nothing), and its webhooks cannot carry `matchConditions`, which this one
  needs: the operator's own requests (finalizers, annotations, status) are not sent to its webhook, so it never
  waits on itself while it starts or stops.

Failure policy: Fail, and the webhooks stay registered when the operator stops: while no replica answers, creating or
changing these objects is refused ("failed calling webhook"), so nothing the checks would refuse slips in during an
upgrade or an outage. docs/install.md says how to remove the configuration when uninstalling. Deleting is never
checked, and only spec changes are.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

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
    configuration: str = DEFAULT_CONFIGURATION  # name of the ValidatingWebhookConfiguration the operator keeps
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


@kopf.on.validate(GROUP, VERSION, "carbonawarejobs", id="carbonawarejob", operations=["CREATE", "UPDATE"])  # fmt: skip
async def validate_carbonawarejob(**kwargs: Any) -> None:
    body, old, operation, userinfo = kwargs["body"], kwargs.get("old"), kwargs.get("operation"), kwargs["userinfo"]
    if _spec_unchanged(operation, body, old):
        return
    state = current()
    created = state.clock.now() if operation == "CREATE" or _times_changed(body, old) else None
    problems = await validation.caj_problems(state, dict(body), user=dict(userinfo), created=created)
    if problems:
        refuse("CarbonAwareJob", body, [message for _, message in problems])


@kopf.on.validate(GROUP, VERSION, "energybudgets", id="energybudget", operations=["CREATE", "UPDATE"])  # fmt: skip
async def validate_energybudget(**kwargs: Any) -> None:
    body, old, operation = kwargs["body"], kwargs.get("old"), kwargs.get("operation")
    if _spec_unchanged(operation, body, old):
        return
    problems = budget_problems(dict(body.get("spec") or {}))
    if problems:
        refuse("EnergyBudget", body, problems)


@kopf.on.validate(GROUP, VERSION, "computeclusters", id="computecluster", operations=["CREATE", "UPDATE"])  # fmt: skip
async def validate_computecluster(**kwargs: Any) -> None:
    body, old, operation = kwargs["body"], kwargs.get("old"), kwargs.get("operation")
    if _spec_unchanged(operation, body, old):
        return
    problems = cluster_problems(dict(body.get("spec") or {}), _options.operator_namespace)
    if problems:
        refuse("ComputeCluster", body, problems)


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

    def __init__(
        self,
        options: WebhookOptions,
        store: SecretStore | MemoryStore | None,
        registrar: Callable[[dict[str, Any]], None],
    ) -> None:
        self.options = options
        self.store = store
        self.registrar = registrar
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
                client_config = self._client_config(dict(config))
                await asyncio.to_thread(self.registrar, client_config)
                yield client_config
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


# -- the configuration ---------------------------------------------------------------------------------------------
HANDLERS = (
    ("carbonawarejob", "carbonawarejobs"),
    ("energybudget", "energybudgets"),
    ("computecluster", "computeclusters"),
)


def webhooks(configuration: str, client_config: dict[str, Any], operator_user: str) -> list[dict[str, Any]]:
    """The configuration's webhooks: one per kind, each at its kopf handler's path (kopf's server routes by it)."""
    out = []
    for handler_id, plural in HANDLERS:
        config = copy.deepcopy(client_config)
        if "url" in config:
            config["url"] = f"{config['url'].rstrip('/')}/{handler_id}"
        if "service" in config:
            config["service"]["path"] = f"{config['service'].get('path') or ''}/{handler_id}"
        rule = {"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [plural],
                "operations": ["CREATE", "UPDATE"], "scope": "*"}  # fmt: skip
        out.append(
            {
                "name": f"{handler_id}.{configuration}",
                "rules": [rule],
                "clientConfig": config,
                "failurePolicy": "Fail",
                "sideEffects": "None",  # SubjectAccessReviews and dry-runs store nothing
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 15,
                "admissionReviewVersions": ["v1"],
                # The operator's own writes (finalizers, kopf's annotations) are not checked: they never change a
                # spec, and its webhook must not be a precondition of its own start and stop.
                "matchConditions": [
                    {
                        "name": "not-the-operator",
                        "expression": f"request.userInfo.username != {json.dumps(operator_user)}",
                    }
                ],
            }
        )
    return out


def configuration_writer(
    api: client.ApiClient,
    configuration: str,
    kind: Literal["validating", "mutating"],
    webhooks_for: Callable[[dict[str, Any], str], list[dict[str, Any]]],
) -> Callable[[dict[str, Any]], None]:
    """Writes `webhooks_for(client_config, operator_user)` into the Validating- or MutatingWebhookConfiguration
    `configuration` (creating it if absent); the operator's own user is excluded by the webhooks' conditions."""
    label = "ValidatingWebhookConfiguration" if kind == "validating" else "MutatingWebhookConfiguration"

    def register(client_config: dict[str, Any]) -> None:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
        user = str(review.status.user_info.username)  # type: ignore[union-attr]
        body = {"webhooks": webhooks_for(client_config, user)}
        admission = client.AdmissionregistrationV1Api(api)
        try:
            getattr(admission, f"patch_{kind}_webhook_configuration")(configuration, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            meta = {"name": configuration, "labels": {"app.kubernetes.io/part-of": "carbonshift"}}
            created: Any = {"metadata": meta, **body}
            getattr(admission, f"create_{kind}_webhook_configuration")(created)
        log.info("webhook: %s %s points at %s", label, configuration,
                 client_config.get("url") or client_config.get("service"))  # fmt: skip

    return register


def registrar(api: client.ApiClient, configuration: str) -> Callable[[dict[str, Any]], None]:
    """Writes the webhooks for a client config into the ValidatingWebhookConfiguration (creating it if absent)."""
    return configuration_writer(
        api, configuration, "validating", lambda config, user: webhooks(configuration, config, user)
    )


class _RefusalsAreNotErrors(logging.Filter):
    """kopf logs every refused manifest as an ERROR ("Webhook ... failed permanently"): a user's typo is not the
    operator's error. Those records are dropped; `refuse` logs each refusal at INFO instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Webhook '") and "failed permanently" in message)


def refuse(kind: str, body: kopf.Body, problems: list[str]) -> None:
    meta = body.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    message = "; ".join(problems)
    log.info("refused %s %s: %s", kind, where, message)
    raise kopf.AdmissionError(message, code=422)


def install(
    options: WebhookOptions, api: client.ApiClient, also: tuple[Callable[[dict[str, Any]], None], ...] = ()
) -> None:
    """Serve the webhook and keep its configuration (call before kopf starts). `also`: more registrars, called with
    the same client config (handlers/adoption.py keeps its MutatingWebhookConfiguration so)."""
    global _options
    _options = options
    logging.getLogger("kopf.objects").addFilter(_RefusalsAreNotErrors())
    if options.cert_dir is not None:
        store: SecretStore | MemoryStore | None = None
    elif options.tls_secret is not None:
        store = SecretStore(api, *options.tls_secret)
    else:
        store = MemoryStore()

    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        validating = registrar(api, options.configuration)

        def register(client_config: dict[str, Any]) -> None:
            for each in (validating, *also):
                each(client_config)

        settings.admission.server = Server(options, store, register)
        settings.admission.managed = None  # the Server writes the configuration itself (module docstring)

    kopf.on.startup()(configure)
