"""Adoption without wrapping (issue 16, item 3; docs/design/adoption.md): a team labels its own workload, carbonshift
creates it suspended and tracks it with a CarbonAwareJob whose `spec.workloadRef` names it.

Two parts, both served by the operator (`carbonshift run --webhook --adoption`):

- **The mutating webhook** (`adopt`), on CREATE of batch/v1 Jobs, JobSets, TrainJobs, PyTorchJobs and RayJobs that
  carry an opt-in label (domain/adoption.py: max-delay, deadline or policy). It checks the labels and the kind's
  own rules, refuses bad ones with a message `kubectl apply` shows, and otherwise sets the kind's suspend field
  (`Workload.suspend_patch()`), the label `carbonshift.io/managed: "true"` and the annotation
  `carbonshift.io/adopted: "true"`. It writes nothing else and creates nothing: the workload is created by its
  author, with the author's rights. It is registered in a MutatingWebhookConfiguration kept by the operator, as
  handlers/admission.py keeps the validating one (same server, certificate and reasons for not using kopf's
  managed mode). One webhook per opt-in label, each with an objectSelector on it (and a matchCondition so that a
  workload with two opt-in labels is sent once): unlabelled workloads never reach the operator. Failure policy
  Fail: a labelled workload the webhook could not see would be created unsuspended and run at once.
- **The tracking object**, made by an event handler on the adopted kinds: a CarbonAwareJob of the workload's name
  (another name when that is taken, see `tracking_name`), owned by the workload (garbage-collected with it),
  `spec.workloadRef` naming it and the terms from its labels. The CarbonAwareJob handler then plans, resumes and
  suspends the workload, with conditions, Events, status and receipt on the tracking object. The workload gets the
  label `carbonshift.io/carbonawarejob: <name>` so that `kubectl get caj` finds it from the workload.

Later changes: changed labels update the tracking object's terms; removing every opt-in label releases the workload
(the tracking object is deleted, the managed label removed, the workload resumed: it runs now, untracked). A labelled
workload created while no webhook was registered (adoption off, the configuration deleted) and not suspended is
left to run, with a Warning Event saying why it was not adopted; one its author created suspended is adopted.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.kube import namespace_missing, namespace_terminating
from carbonshift.adapters.workloads.base import Workload, WorkloadError
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.adapters.workloads.kinds import TrainJob
from carbonshift.adapters.workloads.registry import KINDS, kind_for
from carbonshift.api.base import API_VERSION, GROUP, VERSION
from carbonshift.api.carbonawarejob import KIND as CAJ_KIND
from carbonshift.api.carbonawarejob import PLURAL as CAJ_PLURAL
from carbonshift.api.carbonwindowpolicy import KIND as POLICY_KIND
from carbonshift.api.carbonwindowpolicy import PLURAL as POLICY_PLURAL
from carbonshift.api.carbonwindowpolicy import CarbonWindowPolicy
from carbonshift.api.durations import format_duration, parse_duration
from carbonshift.api.jobs import LABEL_CAJ, LABEL_MANAGED, parse_time
from carbonshift.domain.adoption import (
    LABEL_POLICY,
    OPT_IN,
    AdoptionError,
    AdoptionTerms,
    PolicyDefaults,
    opted_in,
    policy_name,
    terms,
)
from carbonshift.handlers.admission import configuration_writer, refuse
from carbonshift.handlers.state import current
from carbonshift.handlers.validation import api_message

log = logging.getLogger(__name__)
ANNOTATION_ADOPTED = "carbonshift.io/adopted"
LABEL_ADOPTED = "carbonshift.io/adopted"  # on the tracking CarbonAwareJob
WEBHOOK_ID = "adopt"
DEFAULT_CONFIGURATION = "carbonshift.io"


# -- reading a workload ------------------------------------------------------------------------------------------
def controller_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def driven_by_its_owner(meta: dict[str, Any]) -> bool:
    """A JobSet's Jobs, a TrainJob's JobSet, a CarbonAwareJob's workload: their owner is the one to adopt (or is
    ours already); suspending them under it would fight its controller."""
    ref = controller_of(meta)
    if ref is None:
        return False
    key = (ref.get("apiVersion"), ref.get("kind"))
    return key == (API_VERSION, CAJ_KIND) or any(key == (k.info.api_version, k.info.kind) for k in KINDS)


def defaults_of(policy: CarbonWindowPolicy, name: str) -> PolicyDefaults:
    spec = policy.spec
    return PolicyDefaults(
        name=name,
        max_delay=parse_duration(spec.default_max_delay),
        duration=parse_duration(spec.default_duration) if spec.default_duration else None,
        interruptible=spec.interruptible,
    )


async def read_policy(labels: dict[str, str]) -> PolicyDefaults | None:
    """The CarbonWindowPolicy the labels name (None when they name none, or it does not exist: `terms` says so)."""
    name = policy_name(labels)
    if name is None:
        return None
    kube = current().local
    try:
        raw = await kube._raw("read policy", kube.custom.get_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    try:
        return defaults_of(CarbonWindowPolicy.model_validate(raw), name)
    except ValueError as exc:
        raise AdoptionError(
            f"label {LABEL_POLICY}: {POLICY_KIND} {name!r} is invalid: {str(exc).splitlines()[0]}"
        ) from exc


# -- the webhook -------------------------------------------------------------------------------------------------
def admission_problems(workload: Workload) -> list[str]:
    """The kind's own reasons carbonshift could not suspend it (e.g. a RayJob KubeRay would not suspend)."""
    try:
        return workload.problems()
    except WorkloadError as exc:
        return [str(exc)]


async def adopt(**kwargs: Any) -> None:
    """Mutating webhook on CREATE: refuse bad labels, else create the workload suspended and marked managed."""
    body, patch = kwargs["body"], kwargs["patch"]
    obj: dict[str, Any] = dict(body)
    meta: dict[str, Any] = dict(obj.get("metadata") or {})
    labels: dict[str, str] = dict(meta.get("labels") or {})
    if not opted_in(labels) or driven_by_its_owner(meta):
        return
    workload = kind_for(str(obj.get("apiVersion")), str(obj.get("kind")))(obj)
    state = current()
    if isinstance(workload, TrainJob):  # its GPUs may be its runtime's: count them as the handler will
        workload = TrainJob(obj, await WorkloadClient(state.local).runtime_of(workload))
    try:
        terms(labels, created=state.clock.now(), policy=await read_policy(labels), now=state.clock.now())
    except AdoptionError as exc:
        refuse(workload.info.kind, body, [str(exc)])
    problems = admission_problems(workload)
    if problems:
        refuse(workload.info.kind, body, problems)
    for key, value in workload.suspend_patch().items():
        patch[key] = value
    patch["metadata"] = {"labels": {LABEL_MANAGED: "true"}, "annotations": {ANNOTATION_ADOPTED: "true"}}


def register_webhook_handlers(kinds: tuple[type[Workload], ...]) -> None:
    for kind in kinds:
        info = kind.info
        kopf.on.mutate(info.group, info.version, info.plural, id=WEBHOOK_ID, operations=["CREATE"])(adopt)


def webhooks(
    configuration: str, client_config: dict[str, Any], operator_user: str, kinds: tuple[type[Workload], ...] = KINDS
) -> list[dict[str, Any]]:
    """One webhook per opt-in label, each selecting objects that carry it and not an earlier one (so a workload with
    two is sent once), for every supported kind; all at the `adopt` handler's path."""
    config = copy.deepcopy(client_config)
    if "url" in config:
        config["url"] = f"{config['url'].rstrip('/')}/{WEBHOOK_ID}"
    if "service" in config:
        config["service"]["path"] = f"{config['service'].get('path') or ''}/{WEBHOOK_ID}"
    rules = [
        {"apiGroups": [k.info.group], "apiVersions": [k.info.version], "resources": [k.info.plural],
         "operations": ["CREATE"], "scope": "Namespaced"}
        for k in kinds
    ]  # fmt: skip
    out = []
    for i, key in enumerate(OPT_IN):
        conditions = [
            {"name": "not-the-operator", "expression": f"request.userInfo.username != {json.dumps(operator_user)}"}
        ]
        conditions += [
            {
                "name": f"not-also-{earlier.split('/')[-1]}",
                "expression": f"!({json.dumps(earlier)} in object.metadata.labels)",
            }
            for earlier in OPT_IN[:i]
        ]
        out.append(
            {
                "name": f"adopt-{key.split('/')[-1]}.{configuration}",
                "rules": rules,
                "objectSelector": {"matchExpressions": [{"key": key, "operator": "Exists"}]},
                "clientConfig": copy.deepcopy(config),
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "reinvocationPolicy": "Never",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 10,
                "admissionReviewVersions": ["v1"],
                "matchConditions": conditions,
            }
        )
    return out


def registrar(
    api: client.ApiClient, configuration: str, kinds: tuple[type[Workload], ...] = KINDS
) -> Callable[[dict[str, Any]], None]:
    """Writes the adoption webhooks into the MutatingWebhookConfiguration `configuration` (creating it if absent);
    handlers/admission.Server calls it with each client config, beside the validating configuration's."""

    return configuration_writer(
        api, configuration, "mutating", lambda config, user: webhooks(configuration, config, user, kinds)
    )


# -- the tracking object -----------------------------------------------------------------------------------------
def tracking_spec(workload: Workload, agreed: AdoptionTerms) -> dict[str, Any]:
    info = workload.info
    deadline = agreed.deadline.replace(microsecond=0).isoformat().replace("+00:00", "Z")  # whole seconds
    return {
        "workloadRef": {"apiVersion": info.api_version, "kind": info.kind, "name": workload.name},
        "deadline": deadline,
        "duration": format_duration(agreed.duration),
        "interruptible": agreed.interruptible,
    }


def tracking_object(workload: Workload, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    info, meta = workload.info, workload.meta
    owner = {"apiVersion": info.api_version, "kind": info.kind, "name": workload.name, "uid": meta["uid"]}
    return {
        "apiVersion": API_VERSION,
        "kind": CAJ_KIND,
        "metadata": {
            "name": name,
            "namespace": workload.namespace,
            "labels": {LABEL_ADOPTED: "true"},
            "ownerReferences": [owner],
        },
        "spec": spec,
    }


def tracks(caj: dict[str, Any], workload: Workload) -> bool:
    """Whether this CarbonAwareJob is the tracking object of this workload (owned by it: same uid)."""
    uid = workload.meta.get("uid")
    return any(ref.get("uid") == uid for ref in (caj.get("metadata") or {}).get("ownerReferences") or [])


def tracking_name(workload: Workload, taken: Callable[[str], bool]) -> str:
    """The workload's name; if a CarbonAwareJob of that name tracks something else, `<name>-<kind>`, then
    `<name>-<kind>-<uid prefix>` (a Job and a JobSet of one name, or a user's own CarbonAwareJob of that name)."""
    base = workload.name
    candidates = [
        base,
        f"{base}-{workload.info.kind.lower()}",
        f"{base}-{workload.info.kind.lower()}-{workload.meta['uid'][:8]}",
    ]
    for name in candidates:
        if len(name) <= 253 and not taken(name):
            return name
    return candidates[-1][-253:].lstrip("-.")


@dataclass
class Seen:
    """What this operator process already did, so that a busy workload's status events cost no API call."""

    tracked: dict[str, tuple[str, str]] = field(default_factory=dict)  # workload uid -> (tracking name, spec json)
    warned: dict[str, str] = field(default_factory=dict)  # workload uid -> last warning message


SEEN = Seen()


async def get_caj(namespace: str, name: str) -> dict[str, Any] | None:
    kube = current().local
    try:
        return await kube._raw(
            "read CarbonAwareJob", kube.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, CAJ_PLURAL, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def find_tracking(workload: Workload) -> dict[str, Any] | None:
    label = (workload.meta.get("labels") or {}).get(LABEL_CAJ)
    for name in dict.fromkeys([n for n in (label, workload.name) if n]):
        caj = await get_caj(workload.namespace, name)
        if caj is not None and tracks(caj, workload):
            return caj
    return None


async def ensure_tracking(workload: Workload, spec: dict[str, Any]) -> str:
    """Create (or bring up to date) the workload's tracking CarbonAwareJob; returns its name."""
    kube = current().local
    caj = await find_tracking(workload)
    if caj is None:
        taken: dict[str, bool] = {}
        for candidate in (workload.name, f"{workload.name}-{workload.info.kind.lower()}"):
            existing = await get_caj(workload.namespace, candidate)
            taken[candidate] = existing is not None and not tracks(existing, workload)
        name = tracking_name(workload, lambda n: taken.get(n, False))
        manifest = tracking_object(workload, name, spec)
        try:
            await kube._raw(
                "create CarbonAwareJob", kube.custom.create_namespaced_custom_object,
                GROUP, VERSION, workload.namespace, CAJ_PLURAL, manifest,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise
        log.info("adoption: %s %s/%s is tracked by CarbonAwareJob %s", workload.info.kind, workload.namespace,
                 workload.name, name)  # fmt: skip
        return name
    name = str(caj["metadata"]["name"])
    if {k: (caj.get("spec") or {}).get(k) for k in spec} != spec:
        await kube._raw(
            "update CarbonAwareJob terms", kube.custom.patch_namespaced_custom_object,
            GROUP, VERSION, workload.namespace, CAJ_PLURAL, name, {"spec": spec},
        )  # fmt: skip
    return name


async def patch_workload(workload: Workload, body: dict[str, Any]) -> None:
    info, kube = workload.info, current().local
    await kube._raw(
        f"patch {info.kind}", kube.custom.patch_namespaced_custom_object,
        info.group, info.version, workload.namespace, info.plural, workload.name, body,
        _content_type="application/merge-patch+json",
    )  # fmt: skip


def warn_once(body: kopf.Body, uid: str, reason: str, message: str) -> None:
    if SEEN.warned.get(uid) == message:
        return
    SEEN.warned[uid] = message
    kopf.warn(body, reason=reason, message=message)
    log.info("adoption: %s %s: %s", reason, (body.get("metadata") or {}).get("name"), message)


async def release(body: kopf.Body, workload: Workload) -> None:
    """Every opt-in label removed: stop tracking, resume, unmark. The workload then runs as its author made it."""
    caj = await find_tracking(workload)
    kube = current().local
    if caj is not None:
        try:
            await kube._call(
                "delete CarbonAwareJob", kube.custom.delete_namespaced_custom_object,
                GROUP, VERSION, workload.namespace, CAJ_PLURAL, caj["metadata"]["name"],
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise
    unmark: dict[str, Any] = {
        "metadata": {
            "labels": {LABEL_MANAGED: None, LABEL_CAJ: None},
            "annotations": {ANNOTATION_ADOPTED: None},
        }
    }
    if workload.suspended:
        for key, value in workload.resume_patch().items():
            unmark[key] = value
    await patch_workload(workload, unmark)
    SEEN.tracked.pop(str(workload.meta.get("uid")), None)
    kopf.info(body, reason="Released", message="its carbonshift labels were removed: no longer tracked, resumed")


async def track(body: kopf.Body, **_: Any) -> None:
    """Event handler on the adopted kinds: keep each adopted workload's tracking object (module docstring)."""
    obj: dict[str, Any] = dict(body)
    meta: dict[str, Any] = dict(obj.get("metadata") or {})
    if meta.get("deletionTimestamp") or driven_by_its_owner(meta):
        return
    labels: dict[str, str] = dict(meta.get("labels") or {})
    annotations: dict[str, str] = dict(meta.get("annotations") or {})
    workload = kind_for(str(obj.get("apiVersion")), str(obj.get("kind")))(obj)
    uid = str(meta.get("uid"))
    adopted = annotations.get(ANNOTATION_ADOPTED) == "true"
    if adopted and not opted_in(labels):
        await release(body, workload)
        return
    if not opted_in(labels):
        return
    if not adopted:
        if not workload.suspended:
            warn_once(
                body, uid, "NotAdopted",
                "created while carbonshift's adoption webhook was not registered, so it was not created suspended "
                "and runs now, unplanned; delete and create it again to have it planned",
            )  # fmt: skip
            return
        await patch_workload(
            workload, {"metadata": {"labels": {LABEL_MANAGED: "true"}, "annotations": {ANNOTATION_ADOPTED: "true"}}}
        )
        return  # the next event carries the marks
    state = current()
    created = parse_time(meta.get("creationTimestamp"))
    try:
        agreed = terms(labels, created=state.clock.from_wall(created) if created else state.clock.now(),
                       policy=await read_policy(labels))  # fmt: skip
    except AdoptionError as exc:
        warn_once(body, uid, "AdoptionFailed", f"{exc}; carbonshift keeps the terms it had, if any")
        return
    spec = tracking_spec(workload, agreed)
    wanted = json.dumps(spec, sort_keys=True)
    known = SEEN.tracked.get(uid)
    if known is not None and known[1] == wanted and labels.get(LABEL_CAJ) == known[0]:
        return
    try:
        name = await ensure_tracking(workload, spec)
    except ApiException as exc:
        if namespace_missing(exc) or namespace_terminating(exc):
            return  # its namespace is gone or going, and the workload with it: nothing to track, nothing to retry
        if exc.status not in (400, 403, 422):
            raise
        # Needs an operator to act (CRDs older than the operator, RBAC without create): said once, no retry loop.
        warn_once(body, uid, "AdoptionFailed", f"carbonshift could not create its tracking CarbonAwareJob: "
                  f"{api_message(exc)}")  # fmt: skip
        return
    SEEN.tracked[uid] = (name, wanted)
    SEEN.warned.pop(uid, None)
    if labels.get(LABEL_CAJ) != name:
        # The tracking object's name only: not its UID label, which marks a workload a CarbonAwareJob created (and
        # whose pods carry that label); an adopted workload's pods are found by its kind's pod selector.
        await patch_workload(workload, {"metadata": {"labels": {LABEL_CAJ: name}}})


def _watched(meta: kopf.Meta, **_: Any) -> bool:
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return opted_in(labels) or annotations.get(ANNOTATION_ADOPTED) == "true"


def register_tracking_handlers(kinds: tuple[type[Workload], ...]) -> None:
    for kind in kinds:
        info = kind.info
        kopf.on.event(info.group, info.version, info.plural, id="adoption-track", when=_watched)(track)


def install(
    api: client.ApiClient, configuration: str = DEFAULT_CONFIGURATION, served: list[tuple[str, str, str]] | None = None
) -> Callable[[dict[str, Any]], None]:
    """Register the webhook and tracking handlers (call before kopf starts) for batch/v1 Jobs and the kinds the
    cluster serves (`served`: group, version, plural; checked once at start, like the CarbonAwareJob handler's
    watches); returns the registrar that handlers/admission.install keeps the MutatingWebhookConfiguration with."""
    kinds = tuple(
        k for k in KINDS if k.info.builtin or served is None or (k.info.group, k.info.version, k.info.plural) in served
    )
    register_webhook_handlers(kinds)
    register_tracking_handlers(kinds)
    return registrar(api, configuration, kinds)
