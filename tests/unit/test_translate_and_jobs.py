"""From a CarbonAwareJob to planner inputs and a Job manifest; from a plan to status and event text."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from carbonshift.adapters.clock import Clock
from carbonshift.api import CarbonAwareJob, parse_manifest
from carbonshift.api.carbonawarejob import CarbonAwareJobStatus, PlanFlag
from carbonshift.api.jobs import LABEL_CAJ, build_job, gpus_per_pod, gpus_requested, owned_by
from carbonshift.domain.planning.model import Flag, Plan, Reason, RunWindow
from carbonshift.handlers import translate
from tests.catalogue import load_examples

NOW = datetime(2030, 3, 1, 0, tzinfo=UTC)


def example(name: str) -> dict[str, Any]:
    return next(doc for path, doc in load_examples() if path.name.startswith(name))


def with_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "metadata": {**doc["metadata"], "namespace": "ml", "uid": "u-1"}}


def test_job_is_created_suspended_labelled_and_owned() -> None:
    caj = with_meta(example("02-"))
    job = build_job(caj, local=True)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][LABEL_CAJ] == "pretrain-llm"
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_CAJ] == "pretrain-llm"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert "ownerReferences" not in build_job(caj, local=False)["metadata"], "no owner across clusters"
    assert owned_by(job, "u-1") and not owned_by(job, "someone-else")
    assert "suspend" not in caj["spec"]["template"]["spec"], "the CarbonAwareJob itself is not modified"


def test_gpus_per_pod_and_in_total() -> None:
    template = example("06-")["spec"]["template"]
    assert gpus_per_pod(template) == 1
    assert gpus_requested(template) == 2  # parallelism 2


def test_job_needs_take_deadline_overheads_and_the_workloads_gpus() -> None:
    caj = parse_manifest(example("02-"))
    assert isinstance(caj, CarbonAwareJob)
    deadline = translate.effective_deadline(caj.spec, NOW)
    needs = translate.job_needs("p", caj.spec, deadline, gpus=8)
    assert needs.duration == timedelta(hours=30) and needs.deadline == deadline
    assert needs.overhead == timedelta(minutes=2) and needs.min_run == timedelta(hours=1)
    assert needs.interruptible and needs.gpus == 8


def test_max_delay_counts_from_submission() -> None:
    caj = parse_manifest(example("01-"))
    assert isinstance(caj, CarbonAwareJob)
    assert translate.effective_deadline(caj.spec, NOW) == NOW + timedelta(hours=24)


def test_status_fields_from_a_plan_are_accepted_by_the_status_model() -> None:
    windows = (RunWindow(NOW + timedelta(hours=3), NOW + timedelta(hours=5), 112.4),)
    plan = Plan("j", "local", "DE", windows, 900.0, 41900.0, NOW + timedelta(hours=10), Reason.OPTIMAL)
    status = {"plan": translate.plan_status(plan, "trace:DE_2020", "average", NOW), "phase": "Waiting"}
    parsed = CarbonAwareJobStatus.model_validate(status)
    assert parsed.plan is not None and parsed.plan.windows[0].g_per_kwh == pytest.approx(112.4)
    assert status["plan"]["windows"][0]["start"] == "2030-03-01T03:00:00Z"


def test_the_plans_flags_reach_the_status_and_the_event_text() -> None:
    """A plan's flags (facts about its inputs) are in status.plan.flags and said in the Planned event; the CRD's
    list of flags is the planner's."""
    assert set(get_args(PlanFlag)) == {str(flag) for flag in Flag}
    windows = (RunWindow(NOW + timedelta(hours=3), NOW + timedelta(hours=5), 112.4),)
    flags = frozenset({Flag.UNANCHORED, Flag.PARTIAL_FORECAST})
    plan = Plan("j", "local", "DE", windows, 1000.0, 42000.0, NOW + timedelta(hours=10), Reason.OPTIMAL, flags=flags)
    status = translate.plan_status(plan, "trace:DE_2020", "average", NOW)
    assert status["flags"] == ["partial-forecast", "unanchored"]
    parsed = CarbonAwareJobStatus.model_validate({"plan": status})
    assert parsed.plan is not None and parsed.plan.flags == ["partial-forecast", "unanchored"]
    text = translate.plan_summary(plan, 388.0, NOW)
    assert text.startswith("Deferred to 2030-03-01T03:00:00Z: forecast 112 g/kWh vs 388 now, saves about 41.0 kg")
    assert "dearest value" in text and "no current measurement" in text
    plain = Plan("j", "local", "DE", windows, 1000.0, 42000.0, NOW + timedelta(hours=10), Reason.OPTIMAL)
    assert translate.plan_status(plain, None, None, NOW)["flags"] is None  # (removes an earlier plan's flags)


def test_event_text_explains_the_deferral_in_numbers() -> None:
    windows = (RunWindow(NOW + timedelta(hours=3), NOW + timedelta(hours=5), 112.4),)
    plan = Plan("j", "local", "DE", windows, 1000.0, 42000.0, NOW + timedelta(hours=10), Reason.OPTIMAL)
    text = translate.plan_summary(plan, 388.0, NOW)
    assert (
        text == "Deferred to 2030-03-01T03:00:00Z: forecast 112 g/kWh vs 388 now, "
        "saves about 41.0 kg (Optimal, cluster local)"
    )
    assert translate.plan_summary(plan, 388.0, NOW + timedelta(hours=3)).startswith("Running now")
    no_data = Plan("j", "local", "DE", windows, float("nan"), float("nan"), NOW, Reason.NO_DATA)
    assert "latest safe start" in translate.plan_summary(no_data, None, NOW)


def test_accelerated_clock_maps_wall_time_and_survives_restarts() -> None:
    epoch = datetime(2020, 3, 1, tzinfo=UTC)
    anchor = time.time() - 10
    clock = Clock.parse(f"speed=600,epoch=2020-03-01T00:00:00Z,anchor={anchor}")
    mapped = clock.from_wall(datetime.fromtimestamp(anchor + 10, UTC))
    assert abs(mapped - (epoch + timedelta(seconds=6000))) < timedelta(seconds=1)
    assert timedelta(seconds=6000) <= clock.now() - epoch < timedelta(seconds=6000 + 600 * 5)
    again = Clock.parse(f"speed=600,epoch=2020-03-01T00:00:00Z,anchor={anchor}")
    assert abs((again.now() - clock.now()).total_seconds()) < 600, "a restart continues the same planning time"
    assert clock.wall_seconds(timedelta(hours=1)) == 6.0
    with pytest.raises(ValueError, match="bad clock setting"):
        Clock.parse("speed=2,when=now")
    assert Clock.parse("").epoch is None
