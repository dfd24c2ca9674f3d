"""kopf handlers of ComputeCluster: keep the operator's registry of clusters, and report each one's GPUs and health.

A ComputeCluster without `kubeconfigSecretRef` is the cluster the operator runs in; one with it is reached with the
kubeconfig stored in that Secret (read with the operator's own credentials). The registry lives in memory and is
rebuilt from the API on every start (kopf replays every object), so nothing is lost when the operator restarts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from carbonshift.api.base import GROUP, VERSION
from carbonshift.api.computecluster import PLURAL, ComputeCluster
from carbonshift.api.conditions import Condition, ConditionType, Reason, set_condition
from carbonshift.handlers.state import (
    ClusterEntry,
    OperatorState,
    current,
    kube_from_kubeconfig_text,
    kubeconfig_from_secret,
)

log = logging.getLogger(__name__)


async def register(state: OperatorState, body: dict[str, Any]) -> ClusterEntry:
    """Add or refresh the registry entry of one ComputeCluster."""
    cc = ComputeCluster.model_validate(body)
    name = str(cc.metadata.name)
    ref = cc.spec.kubeconfig_secret_ref
    if ref is None:
        kube = state.local
    else:
        text = await asyncio.to_thread(kubeconfig_from_secret, state.local, ref.namespace, ref.name, ref.key)
        kube = kube_from_kubeconfig_text(name, text)
        kube.target_namespace = cc.spec.target_namespace  # Jobs go there (the CRD requires it for remote clusters)
    entry = ClusterEntry(name, cc.spec.zone, cc.spec.pue, kube, cc.spec.gpu_capacity, admits=cc.spec.admits)
    entry.embodied_grams_per_gpu_second = cc.spec.embodied.grams_per_gpu_second() if cc.spec.embodied else 0.0
    state.clusters[name] = entry
    return entry


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def cluster_changed(body: kopf.Body, name: str, **_: Any) -> None:
    state = current()
    try:
        await register(state, dict(body))
    except ApiException as exc:  # its kubeconfig Secret is missing or unreadable: say which, without a traceback
        state.clusters.pop(name, None)
        ref = (body.get("spec") or {}).get("kubeconfigSecretRef") or {}
        where = f"Secret {ref.get('namespace')}/{ref.get('name')}"
        raise kopf.TemporaryError(f"ComputeCluster {name}: cannot read {where}: {exc.reason}", delay=30) from exc
    except (LookupError, ValueError, OSError) as exc:
        state.clusters.pop(name, None)
        raise kopf.TemporaryError(f"ComputeCluster {name}: cannot reach it: {exc}", delay=30) from exc


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def cluster_deleted(name: str, **_: Any) -> None:
    current().clusters.pop(name, None)


@kopf.timer(GROUP, VERSION, PLURAL, interval=30.0, initial_delay=1.0)
async def cluster_health(body: kopf.Body, name: str, patch: kopf.Patch, **_: Any) -> None:
    """GPUs and reachability of the cluster, in its status (the planner reads the same counts)."""
    state = current()
    entry = state.clusters.get(name)
    now = datetime.now(UTC)
    conditions = [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions") or []]
    generation = int(body.get("metadata", {}).get("generation", 0))
    if entry is None:
        conditions, _changed = set_condition(
            conditions, ConditionType.READY, False, Reason.CLUSTER_UNREACHABLE, "not registered yet", now, generation
        )
    else:
        try:
            capacity = await entry.kube.gpu_capacity()
            total, used = capacity.total, capacity.used
            cap = total if entry.gpu_capacity is None else min(total, entry.gpu_capacity)
            patch.status["gpusTotal"] = total
            patch.status["gpusFree"] = max(cap - used, 0)
            patch.status["lastSeen"] = now.isoformat().replace("+00:00", "Z")
            conditions, _changed = set_condition(
                conditions, ConditionType.READY, True, Reason.CLUSTER_REACHABLE, f"{total} GPUs", now, generation
            )
        except Exception as exc:  # report any failure to reach the cluster as the condition
            conditions, _changed = set_condition(
                conditions, ConditionType.READY, False, Reason.CLUSTER_UNREACHABLE, str(exc)[:300], now, generation
            )
    patch.status["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in conditions]
