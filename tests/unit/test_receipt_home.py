"""The job's home cluster (the spatial counterfactual) and the pricing options the reconcile passes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np

from carbonshift.adapters.clock import Clock
from carbonshift.adapters.kube import Kube
from carbonshift.api.carbonawarejob import CarbonAwareJob
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers.energy import home_entry, pricing_options
from carbonshift.handlers.state import ClusterEntry, OperatorState, Settings


class NoForecasts:
    async def forecast(self, zone: str, now: datetime, horizon: Any) -> Any:
        raise AssertionError("not used")

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> Any:
        raise AssertionError("not used")


def job(clusters: list[str] | None = None) -> CarbonAwareJob:
    container = {"name": "t", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}
    spec: dict[str, Any] = {
        "duration": "1h",
        "maxDelay": "4h",
        "template": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}},
    }
    if clusters:
        spec["placement"] = {"clusters": clusters}
    return CarbonAwareJob.model_validate({"metadata": {"name": "j", "namespace": "ml"}, "spec": spec})


def operator(receipts_on_traces: bool = False) -> OperatorState:
    local, remote = cast(Kube, object()), cast(Kube, object())
    state = OperatorState(Settings(receipts_on_traces=receipts_on_traces), Clock(), local, NoForecasts())
    state.clusters = {
        "gpu-gb": ClusterEntry("gpu-gb", "GB", 1.1, remote, embodied_grams_per_gpu_second=0.02),
        "gpu-de-b": ClusterEntry("gpu-de-b", "DE", 1.3, local),
        "gpu-de": ClusterEntry("gpu-de", "DE", 1.2, local),
    }
    return state


def test_home_is_the_first_allowed_cluster_else_the_first_in_the_operators_own_cluster() -> None:
    state = operator()
    assert (home := home_entry(state, job(["gpu-gb", "gpu-de"]))) is not None and home.name == "gpu-gb"
    assert (home := home_entry(state, job(["nope", "gpu-de-b"]))) is not None and home.name == "gpu-de-b"
    assert (home := home_entry(state, job())) is not None and home.name == "gpu-de"  # by name, local kube
    state.clusters = {}
    assert (home := home_entry(state, job())) is not None and home.name == "local"  # --zone/--pue


async def test_pricing_options_name_the_home_only_when_the_job_ran_elsewhere() -> None:
    asked: list[str] = []
    series = IntensitySeries("DE", datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=1), np.full(3, 450.0))

    async def history(zone: str) -> IntensitySeries | None:
        asked.append(zone)
        return series

    away = await pricing_options(operator(True), job(), "gpu-gb", history)
    assert away == {
        "traces_allowed": True,
        "embodied_grams_per_gpu_second": 0.02,
        "home": series,
        "home_pue": 1.2,
        "home_cluster": "gpu-de",
    }
    assert asked == ["DE"]
    at_home = await pricing_options(operator(), job(), "gpu-de", history)
    assert at_home == {"traces_allowed": False, "embodied_grams_per_gpu_second": 0.0}
