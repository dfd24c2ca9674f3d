"""The kubernetes client's API methods called without pydantic's per-call argument validation (adapters/kube.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from pydantic import ValidationError

from carbonshift.adapters.kube import unvalidated


class Recorder:
    """Stands in for the client's REST layer: records each request instead of sending it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, headers: Any = None, body: Any = None, **_: Any) -> Any:
        self.requests.append((method, url, body))
        raise RuntimeError("recorded")


def api_with_recorder() -> tuple[client.CustomObjectsApi, client.BatchV1Api, Recorder]:
    api_client = client.ApiClient(client.Configuration(host="https://example.invalid"))
    recorder = Recorder()
    api_client.rest_client = recorder  # type: ignore[assignment]
    return client.CustomObjectsApi(api_client), client.BatchV1Api(api_client), recorder


def test_the_same_requests_without_the_validation() -> None:
    custom, batch, recorder = api_with_recorder()
    calls = [
        (batch.read_namespaced_job, ("train", "team-a"), {}),
        (custom.patch_namespaced_custom_object_status,
         ("carbonshift.dev", "v1alpha1", "team-a", "carbonawarejobs", "train", {"status": {"phase": "Running"}}), {}),
        (batch.patch_namespaced_job, ("train", "team-a", {"spec": {"suspend": False}}), {}),
    ]  # fmt: skip
    for fn, args, kwargs in calls:
        for wrapped in (fn, unvalidated(fn)):
            with pytest.raises(RuntimeError, match="recorded"):
                wrapped(*args, _preload_content=False, **kwargs)
    assert len(recorder.requests) == 2 * len(calls)
    for validated, raw in zip(recorder.requests[::2], recorder.requests[1::2], strict=True):
        assert validated == raw


def test_the_validation_is_what_is_skipped() -> None:
    _, batch, recorder = api_with_recorder()
    with pytest.raises(ValidationError):
        batch.read_namespaced_job(42, "team-a")  # a name must be a string: the validated method refuses it
    with pytest.raises(RuntimeError, match="recorded"):
        unvalidated(batch.read_namespaced_job)(42, "team-a")  # the raw one sends it as it is
    assert recorder.requests[0][1].endswith("/namespaces/team-a/jobs/42")


def test_anything_else_is_returned_as_it_is() -> None:
    def plain(x: int) -> int:
        return x

    assert unvalidated(plain) is plain
    assert unvalidated(len) is len
