"""When may a budget end the reservation of an admitted job that the operator's mirror does not hold?

Only when the job is really gone. Right after a restart kopf may not have listed every CarbonAwareJob yet; ending an
admitted job's reservation then frees room that it still needs, and one more job than the budget holds is admitted
(seen as 6 jobs run against a budget of 5.5 in the burst e2e test on a loaded machine).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from carbonshift.domain.budgets import JobUsage, Ledger, LedgerEntry
from carbonshift.handlers import energybudget as eb

KEY = ("team-a", "cap")
BUCKET = datetime(2026, 12, 5, tzinfo=UTC)


class FakeCustom:
    """The API's CarbonAwareJobs by name: a UID, or absent (404). Records the names looked up."""

    def __init__(self, jobs: dict[str, str]) -> None:
        self.jobs = jobs
        self.lookups: list[str] = []

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        assert plural == "carbonawarejobs" and ns == KEY[0]
        self.lookups.append(name)
        if name not in self.jobs:
            raise ApiException(status=404, reason="Not Found")
        return {"metadata": {"name": name, "uid": self.jobs[name]}}


@pytest.fixture
def ledger_with_admitted_job(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = LedgerEntry("uid-a", "job-a", BUCKET, used_kwh=0.05, reserved_kwh=0.2, base_kwh=0.0)
    body = {"metadata": {"name": KEY[1]}, "status": eb.ledger_to_wire(Ledger((entry,), ()))}
    monkeypatch.setattr(eb, "MIRROR", eb.Mirror({}, {}, {KEY: body}))
    monkeypatch.setattr(eb, "STARTED", time.monotonic() - 1000.0)
    monkeypatch.setattr(eb, "SETTLE_SECONDS", 5.0)


def complete_with(monkeypatch: pytest.MonkeyPatch, jobs: dict[str, str]) -> tuple[bool, list[str]]:
    fake = FakeCustom(jobs)
    monkeypatch.setattr(eb, "_custom", lambda: fake)
    return asyncio.run(eb.mirror_complete(KEY)), fake.lookups


@pytest.mark.usefixtures("ledger_with_admitted_job")
def test_an_admitted_job_the_mirror_has_not_seen_but_the_api_has_keeps_its_reservation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    complete, lookups = complete_with(monkeypatch, {"job-a": "uid-a"})
    assert complete is False and lookups == ["job-a"]


@pytest.mark.usefixtures("ledger_with_admitted_job")
def test_a_job_gone_from_the_api_or_recreated_under_its_name_is_taken_as_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert complete_with(monkeypatch, {}) == (True, ["job-a"])
    assert complete_with(monkeypatch, {"job-a": "uid-of-a-new-job"}) == (True, ["job-a"])


@pytest.mark.usefixtures("ledger_with_admitted_job")
def test_a_job_the_mirror_holds_is_not_looked_up_and_nothing_is_complete_before_the_settle_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eb.MIRROR.jobs[("team-a", "job-a")] = eb.JobInfo("uid-a", {"team": "b"}, JobUsage("team-a", "job-a", {}, ()), False)
    assert complete_with(monkeypatch, {"job-a": "uid-a"}) == (True, [])  # relabelled out: seen, not unseen
    monkeypatch.setattr(eb, "STARTED", time.monotonic())
    assert complete_with(monkeypatch, {}) == (False, [])
