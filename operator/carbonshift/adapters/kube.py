"""Kubernetes access for the operator: Jobs, pods, nodes and CarbonAwareJob status, through the official client.

The official client is synchronous; every call runs in a worker thread so the kopf event loop never blocks.
Throttling (429), server errors and conflicts are retried with backoff a bounded number of times, then raised as
`KubeUnavailableError` for the handler to report and retry on its next tick.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson
from kubernetes import client
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException

from carbonshift.api.base import GROUP, VERSION
from carbonshift.api.carbonawarejob import PLURAL
from carbonshift.api.jobs import GPU_RESOURCE, LABEL_CAJ, LABEL_CAJ_NAMESPACE, LABEL_CAJ_UID

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE = {409, 429, 500, 502, 503, 504}
POD_PAGE = 250
API_WORKERS = 16  # concurrent API calls (threads; the official client is synchronous)
_EXECUTOR = ThreadPoolExecutor(API_WORKERS, thread_name_prefix="kube")


def json_loads(text: str | bytes) -> Any:
    """JSON as the API server sends it, decoded by orjson (a maintained C decoder, pinned in pyproject.toml): about
    half the standard library's time on a 3.5 KB CarbonAwareJob (19 -> 10 us), the same result for what the API
    server sends (its integers are int64, which orjson reads exactly). What orjson refuses (e.g. NaN, which the
    standard library takes) is read by the standard library, so nothing read before is refused now. Used for our
    raw API reads and for kopf's watch stream (handlers/state.py, `fast_watch_json`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def unvalidated(fn: Callable[..., T]) -> Callable[..., T]:
    """A method of the kubernetes client's generated API classes without its argument validation.

    Each of those methods is wrapped in pydantic's `validate_call`, which checks every argument on every call:
    6% of the operator's CPU while 1,000 jobs resumed (py-spy, bench/bench_operator.py). This module builds the
    arguments itself, with the types the API classes declare, so the validation never changes an argument; the
    function pydantic wraps (its documented `raw_function`) is called instead. Anything else is returned as it is."""
    raw = getattr(getattr(fn, "__func__", None), "raw_function", None)
    owner = getattr(fn, "__self__", None)
    if raw is None or owner is None:
        return fn
    return partial(raw, owner)


@dataclass(frozen=True)
class Capacity:
    """One listing of a cluster's GPUs. `by_job`: GPUs requested by each CarbonAwareJob's unfinished pods (running,
    waiting or terminating), included in `used`: read from the same listing, the two never disagree."""

    total: int
    used: int
    largest_node: int
    by_job: dict[tuple[str, str], int] = field(default_factory=dict)


# The API server writes an object's keys in order (apiVersion, kind, metadata, spec, status; in metadata,
# resourceVersion after annotations, whose values are strings where a quote is escaped): the first match is the
# object's own.
_RESOURCE_VERSION = re.compile(rb'"resourceVersion":"([^"]*)"')


def resource_version(body: bytes) -> str:
    """metadata.resourceVersion of an object as the API server sent it (JSON), without parsing all of it."""
    found = _RESOURCE_VERSION.search(body, body.find(b'"metadata":'))
    if found is not None:
        return found.group(1).decode()
    parsed = json.loads(body or b"{}")
    return str(((parsed if isinstance(parsed, dict) else {}).get("metadata") or {}).get("resourceVersion", ""))


class KubeUnavailableError(RuntimeError):
    """The API server kept failing or throttling; try again on the next tick."""


def _status_body(exc: ApiException) -> dict[str, Any]:
    """The API server's Status body of a refusal, parsed ({} when it sent none or not JSON)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _status_reason(exc: ApiException) -> str | None:
    """The `reason` of the API server's Status body (AlreadyExists, Conflict, ...), if it sent one."""
    reason = _status_body(exc).get("reason")
    return reason if isinstance(reason, str) else None


def already_exists(exc: BaseException) -> bool:
    """A create refused because the object exists (409 AlreadyExists): final, unlike a 409 Conflict on an update,
    which a re-read and retry can resolve."""
    return isinstance(exc, ApiException) and exc.status == 409 and _status_reason(exc) == "AlreadyExists"


def namespace_missing(exc: BaseException) -> bool:
    """The API server refused because the namespace no longer exists (404 with details.kind "namespaces"), as
    opposed to a resource it does not serve."""
    if not isinstance(exc, ApiException) or exc.status != 404:
        return False
    return (_status_body(exc).get("details") or {}).get("kind") == "namespaces"


def namespace_terminating(exc: BaseException) -> bool:
    """The API server refused to create something because its namespace is being deleted (403 NamespaceTerminating).

    Not a permission problem and not worth retrying hard: the namespace's objects, ours included, are about to go."""
    if not isinstance(exc, ApiException) or exc.status != 403:
        return False
    causes = (_status_body(exc).get("details") or {}).get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


@dataclass
class Kube:
    """One cluster's API: `name` is the ComputeCluster name (or "local")."""

    name: str
    api: client.ApiClient
    attempts: int = 5
    base_delay: float = 0.2
    # A remote ComputeCluster's spec.targetNamespace: its Jobs go there, whatever their CarbonAwareJob's namespace.
    target_namespace: str | None = None

    def ns(self, namespace: str) -> str:
        """The namespace in this cluster of a Job whose CarbonAwareJob is in `namespace`."""
        return self.target_namespace or namespace

    def __post_init__(self) -> None:
        # As many pooled connections as worker threads: the client's default pool keeps 4, so with more threads
        # every burst (a window opening for many jobs) discarded connections and paid a new TLS handshake each.
        if (self.api.configuration.connection_pool_maxsize or 0) < API_WORKERS:
            self.api.configuration.connection_pool_maxsize = API_WORKERS
            self.api.rest_client = rest.RESTClientObject(self.api.configuration)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        fn = unvalidated(fn)
        delay = self.base_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, partial(fn, *args, **kwargs))
            except ApiException as exc:
                if exc.status not in RETRYABLE or already_exists(exc):
                    raise
                if attempt == self.attempts:
                    raise KubeUnavailableError(f"{what} on cluster {self.name}: HTTP {exc.status}") from exc
                retry_after = (exc.headers or {}).get("Retry-After") if exc.headers else None
                wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                log.info("%s on %s: HTTP %s, retrying in %.1fs", what, self.name, exc.status, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 5.0)
            except OSError as exc:  # connection refused/reset: the API server is restarting
                if attempt == self.attempts:
                    raise KubeUnavailableError(f"{what} on cluster {self.name}: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    # -- Jobs ------------------------------------------------------------------------------------------------
    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._raw("read job", self.batch.read_namespaced_job, name, self.ns(namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the Job; if it already exists (a restarted operator), return the existing one."""
        manifest["metadata"]["namespace"] = self.ns(manifest["metadata"]["namespace"])
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            return await self._raw("create job", self.batch.create_namespaced_job, namespace, manifest)
        except ApiException as exc:
            if not already_exists(exc):
                raise
        existing = await self.get_job(namespace, name)
        if existing is None:
            raise KubeUnavailableError(f"job {namespace}/{name} reported as existing but not found")
        return existing

    async def pods_matching(self, namespace: str, selector: dict[str, str]) -> list[tuple[str, str]]:
        """(name, uid) of the pods with all these labels, finished ones included (a workload's `pod_selector()`)."""
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = await self._raw("list pods", self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        found = []
        for pod in pods.get("items") or []:
            meta = pod.get("metadata") or {}
            found.append((str(meta.get("name", "")), str(meta.get("uid", ""))))
        return found

    async def workload_pods(self, namespace: str, caj_uid: str, job_uid: str | None) -> list[tuple[str, str]]:
        """(name, uid) of the pods of a CarbonAwareJob's Job, finished ones included: labelled with the
        CarbonAwareJob's UID by the operator (LABEL_CAJ_UID on the pod template) and, when the Job's UID is known,
        controlled by that Job (ownerReferences, as the Job controller sets them). The pods energy is charged to."""
        pods = await self._raw(
            "list pods", self.core.list_namespaced_pod, namespace, label_selector=f"{LABEL_CAJ_UID}={caj_uid}"
        )
        found = []
        for pod in pods.get("items") or []:
            meta = pod.get("metadata") or {}
            owners = meta.get("ownerReferences") or []
            if job_uid is not None and not any(
                o.get("kind") == "Job" and o.get("uid") == job_uid and o.get("controller") for o in owners
            ):
                continue
            found.append((str(meta.get("name", "")), str(meta.get("uid", ""))))
        return found

    # -- capacity --------------------------------------------------------------------------------------------
    async def gpu_capacity(self) -> Capacity:
        """Allocatable GPUs on schedulable nodes, GPUs requested by unfinished pods, the most on any one node, and
        the GPUs of each CarbonAwareJob's pods (by namespace and name) within `used`, from the same listing.

        Read as plain JSON: building the client's model objects for every pod in a large cluster cost 10x the
        request itself (py-spy on the 1,000-job benchmark: 88% of the operator's CPU in pod-list deserialisation)."""
        nodes = await self._raw("list nodes", self.core.list_node)
        total = largest = 0
        for node in nodes.get("items") or []:
            if (node.get("spec") or {}).get("unschedulable"):
                continue
            on_node = int((node.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE, 0))
            total += on_node
            largest = max(largest, on_node)
        used = 0
        by_job: dict[tuple[str, str], int] = {}
        token: str | None = None
        while True:  # in pages: a cluster's every pod at once held 180 MiB of objects at 1,000 pods (memray)
            page = await self._raw(
                "list pods",
                self.core.list_pod_for_all_namespaces,
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
                limit=POD_PAGE,
                **({"_continue": token} if token else {}),
            )
            for pod in page.get("items") or []:
                gpus = 0
                for container in (pod.get("spec") or {}).get("containers") or []:
                    gpus += int(((container.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, 0))
                used += gpus
                meta = pod.get("metadata") or {}
                labels = meta.get("labels") or {}
                owner = labels.get(LABEL_CAJ)
                if owner and gpus:
                    key = (str(labels.get(LABEL_CAJ_NAMESPACE) or meta.get("namespace", "")), str(owner))
                    by_job[key] = by_job.get(key, 0) + gpus
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return Capacity(total, used, largest, by_job)

    async def _raw(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A call's response body as plain JSON (the API's own spelling), without the client's model objects: those
        cost more CPU than the request (py-spy), for Jobs as for pod lists. The body is read in the worker thread:
        read lazily on the event loop, one page of a busy API server's pod list stalled every job."""

        body: dict[str, Any] = json_loads(await self._bytes(what, fn, *args, **kwargs))
        return body

    async def _bytes(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """A call's response body, unparsed (read in the worker thread)."""

        def fetch() -> bytes:
            response = fn(*args, _preload_content=False, **kwargs)
            try:
                return bytes(response.data)
            finally:
                response.release_conn()  # back to the pool now, not when collected

        return await self._call(what, fetch)

    # -- CarbonAwareJob status (management cluster only) ------------------------------------------------------
    async def patch_caj_status(self, namespace: str, name: str, status: dict[str, Any]) -> str:
        """Merge-patch the status; returns the object's new resourceVersion.

        Only the resourceVersion is read from the answer (the whole object): parsing all of it, on every status
        patch, was 4% of the operator's CPU at the 1,000-job benchmark (py-spy)."""

        fn = self.custom.patch_namespaced_custom_object_status
        answer = await self._bytes("patch status", fn, GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        return resource_version(answer)

    # -- admission checks (handlers/validation.py) ----------------------------------------------------------
    async def may(
        self, user: dict[str, Any], verb: str, group: str, resource: str, namespace: str, *, name: str | None = None
    ) -> tuple[bool, str]:
        """Whether the user of an admission request (username, uid, groups, extra) may do `verb` on `resource` in
        `namespace` (on the object `name`, when given) (a SubjectAccessReview); with the authorizer's reason."""
        attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": resource}
        if name:
            attributes["name"] = name
        spec = {
            "user": user.get("username"),
            "uid": user.get("uid"),
            "groups": user.get("groups") or [],
            "extra": user.get("extra") or {},
            "resourceAttributes": attributes,
        }
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        api = client.AuthorizationV1Api(self.api)
        answer = await self._raw("subject access review", api.create_subject_access_review, review)
        status = answer.get("status") or {}
        return bool(status.get("allowed")) and not status.get("denied"), str(status.get("reason") or "")

    # -- the operator's own ConfigMaps (handlers/forecast_store.py) ------------------------------------------------
    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ConfigMap's data, or None when there is none."""
        try:
            found = await self._raw("read configmap", self.core.read_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {str(k): str(v) for k, v in (found.get("data") or {}).items()}

    async def write_config_map(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]) -> None:
        """Replace the ConfigMap's data (created when absent). Last writer wins: one operator leader writes it."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                "metadata": {"name": name, "namespace": namespace, "labels": labels}}  # fmt: skip
        try:
            await self._call("replace configmap", self.core.replace_namespaced_config_map, name, namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self._call("create configmap", self.core.create_namespaced_config_map, namespace, body)

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        found = await self._raw("read namespace", self.core.read_namespace, namespace)
        return dict((found.get("metadata") or {}).get("labels") or {})

    async def list_compute_clusters(self) -> list[dict[str, Any]]:
        found = await self._raw(
            "list computeclusters", self.custom.list_cluster_custom_object, GROUP, VERSION, "computeclusters"
        )
        return list(found.get("items") or [])

    async def list_energy_budgets(self, namespace: str) -> list[dict[str, Any]]:
        found = await self._raw(
            "list energybudgets", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "energybudgets"
        )
        return list(found.get("items") or [])
