"""Adoption's pure parts: the terms a workload's labels ask for, and the webhooks the operator registers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carbonshift.adapters.workloads.kinds import BatchJob, JobSet, PyTorchJob
from carbonshift.domain.adoption import (
    AdoptionError,
    PolicyDefaults,
    format_basic_time,
    opted_in,
    parse_basic_time,
    terms,
)
from carbonshift.handlers.adoption import driven_by_its_owner, tracking_name, tracking_spec, webhooks

CREATED = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
POLICY = PolicyDefaults(name="batch", max_delay=timedelta(hours=36), duration=timedelta(hours=3), interruptible=True)


def test_max_delay_counts_from_creation_and_labels_set_every_term() -> None:
    labels = {
        "carbonshift.io/max-delay": "24h",
        "carbonshift.io/duration": "1h30m",
        "carbonshift.io/interruptible": "true",
    }
    got = terms(labels, created=CREATED, policy=None)
    assert got.deadline == CREATED + timedelta(hours=24)
    assert got.duration == timedelta(hours=1, minutes=30)
    assert got.interruptible is True and got.policy is None


def test_a_deadline_in_basic_form() -> None:
    got = terms(
        {"carbonshift.io/deadline": "20261206T1800Z", "carbonshift.io/duration": "2h"}, created=CREATED, policy=None
    )
    assert got.deadline == datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    assert got.interruptible is False
    assert parse_basic_time(format_basic_time(got.deadline)) == got.deadline


def test_the_policy_fills_what_labels_leave_out_and_labels_win() -> None:
    only = terms({"carbonshift.io/policy": "batch"}, created=CREATED, policy=POLICY)
    assert (only.deadline, only.duration, only.interruptible, only.policy) == (
        CREATED + timedelta(hours=36), timedelta(hours=3), True, "batch"
    )  # fmt: skip
    labels = {
        "carbonshift.io/policy": "batch",
        "carbonshift.io/duration": "1h",
        "carbonshift.io/interruptible": "false",
    }
    mixed = terms(labels, created=CREATED, policy=POLICY)
    assert (mixed.duration, mixed.interruptible) == (timedelta(hours=1), False)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"carbonshift.io/max-delay": "24h"}, "label carbonshift.io/duration is required"),
        ({"carbonshift.io/max-delay": "tomorrow", "carbonshift.io/duration": "1h"}, "'tomorrow' is not a duration"),
        ({"carbonshift.io/max-delay": "0s", "carbonshift.io/duration": "1h"}, "'0s' must be positive"),
        ({"carbonshift.io/deadline": "2026-12-06T18:00:00Z", "carbonshift.io/duration": "1h"}, "ISO 8601 basic form"),
        ({"carbonshift.io/deadline": "20261332T000000Z", "carbonshift.io/duration": "1h"}, "is not a valid time"),
        ({"carbonshift.io/max-delay": "2h", "carbonshift.io/deadline": "20261206T1800Z",
          "carbonshift.io/duration": "1h"}, "not both"),
        ({"carbonshift.io/max-delay": "2h", "carbonshift.io/duration": "1h", "carbonshift.io/interruptible": "True"},
         'must be "true" or "false"'),
        ({"carbonshift.io/policy": "other", "carbonshift.io/duration": "1h"}, "CarbonWindowPolicy 'other' not found"),
        ({"carbonshift.io/duration": "1h"}, "set one of the labels"),
    ],
)  # fmt: skip
def test_bad_labels_say_which_label_and_what_is_expected(labels: dict[str, str], message: str) -> None:
    with pytest.raises(AdoptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        terms(labels, created=CREATED, policy=POLICY if labels.get("carbonshift.io/policy") == "batch" else None)


def test_at_admission_a_deadline_the_run_cannot_meet_is_refused() -> None:
    labels = {"carbonshift.io/max-delay": "2h", "carbonshift.io/duration": "2h"}
    terms(labels, created=CREATED, policy=None, now=CREATED)  # exactly fits
    with pytest.raises(AdoptionError, match="cannot be met: 2h of run time"):
        terms(labels, created=CREATED, policy=None, now=CREATED + timedelta(minutes=1))


def test_only_the_opt_in_labels_opt_in() -> None:
    assert opted_in({"carbonshift.io/max-delay": "1h"}) and opted_in({"carbonshift.io/policy": "p"})
    assert not opted_in({"carbonshift.io/duration": "1h", "carbonshift.io/interruptible": "true"})
    assert not opted_in(None)


def test_one_webhook_per_opt_in_label_each_sent_once_and_never_for_the_operator() -> None:
    hooks = webhooks(
        "carbonshift.io", {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}, "system:serviceaccount:x:y"
    )
    assert [h["name"] for h in hooks] == [
        "adopt-max-delay.carbonshift.io", "adopt-deadline.carbonshift.io", "adopt-policy.carbonshift.io"
    ]  # fmt: skip
    for hook in hooks:
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/adopt", "caBundle": "Q0E="}
        resources = {(r["apiGroups"][0], r["resources"][0]) for r in hook["rules"]}
        assert resources == {
            ("batch", "jobs"), ("jobset.x-k8s.io", "jobsets"), ("trainer.kubeflow.org", "trainjobs"),
            ("kubeflow.org", "pytorchjobs"), ("ray.io", "rayjobs"),
        }  # fmt: skip
        assert all(r["operations"] == ["CREATE"] for r in hook["rules"])
    selectors = [h["objectSelector"]["matchExpressions"][0]["key"] for h in hooks]
    assert selectors == ["carbonshift.io/max-delay", "carbonshift.io/deadline", "carbonshift.io/policy"]
    conditions = [[c["expression"] for c in h["matchConditions"]] for h in hooks]
    assert all(c[0] == 'request.userInfo.username != "system:serviceaccount:x:y"' for c in conditions)
    assert conditions[2][1:] == [
        '!("carbonshift.io/max-delay" in object.metadata.labels)',
        '!("carbonshift.io/deadline" in object.metadata.labels)',
    ]
    service = webhooks("c", {"service": {"namespace": "ns", "name": "svc", "port": 443, "path": ""}}, "u")
    assert service[0]["clientConfig"]["service"]["path"] == "/adopt"


def test_children_of_a_driven_kind_are_not_adopted_on_their_own() -> None:
    owned = {"ownerReferences": [{"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "controller": True}]}
    assert driven_by_its_owner(owned)
    wrapped = {
        "ownerReferences": [{"apiVersion": "carbonshift.io/v1alpha1", "kind": "CarbonAwareJob", "controller": True}]
    }
    assert driven_by_its_owner(wrapped)
    cron = {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "controller": True}]}
    assert not driven_by_its_owner(cron)
    assert not driven_by_its_owner({})


def test_tracking_names_avoid_a_caj_that_tracks_something_else() -> None:
    job = BatchJob({"metadata": {"name": "train", "uid": "0123456789abcdef"}})
    assert tracking_name(job, lambda n: False) == "train"
    assert tracking_name(job, lambda n: n == "train") == "train-job"
    assert tracking_name(job, lambda n: n in {"train", "train-job"}) == "train-job-01234567"


def test_the_tracking_spec_names_the_workload_and_its_terms() -> None:
    agreed = terms({"carbonshift.io/max-delay": "24h", "carbonshift.io/duration": "90m"}, created=CREATED, policy=None)
    spec = tracking_spec(JobSet({"metadata": {"name": "pre"}}), agreed)
    assert spec == {
        "workloadRef": {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "name": "pre"},
        "deadline": "2026-12-06T01:00:00Z",
        "duration": "1h30m",
        "interruptible": False,
    }
    pytorch = tracking_spec(PyTorchJob({"metadata": {"name": "p"}}), agreed)
    assert pytorch["workloadRef"]["apiVersion"] == "kubeflow.org/v1"
