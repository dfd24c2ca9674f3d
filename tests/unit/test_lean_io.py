"""What the operator skips for speed gives the same answers as what it replaced: kopf's diff-base built without its
deep copy of every body, kopf's progress annotations cleared from an essence without copying it whole, and an
object's resourceVersion read from a status patch's answer without parsing it all (bench/bench_operator.py measures
the speed; docs/design/operator.md, "Scale")."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import kopf
import pytest

from carbonshift.adapters.kube import resource_version
from carbonshift.handlers.state import LeanDiffBaseStorage, LeanProgressStorage

KOPF_ANNOTATION = "carbonshift.io/last-handled-configuration"


def body(**extra_meta: Any) -> dict[str, Any]:
    """A CarbonAwareJob as a watch event brings it: status, managedFields, kopf's and the user's annotations."""
    return {
        "apiVersion": "carbonshift.io/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {
            "name": "train",
            "namespace": "team",
            "uid": "u-1",
            "resourceVersion": "4711",
            "generation": 2,
            "labels": {"team": "ml"},
            "annotations": {
                KOPF_ANNOTATION: json.dumps({"spec": {"duration": "30m"}}),
                "carbonshift.io/kopf-managed": "yes",  # kopf's marker: its prefix's other annotations are dropped
                "carbonshift.io/create.handler": "{}",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "example.com/owner": 'says "resourceVersion":"1" in a string',
            },
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
            "managedFields": [
                {"manager": "carbonshift", "subresource": "status", "fieldsV1": {"f:status": {"f:plan": {}}}},
                {"manager": "kubectl", "fieldsV1": {"f:spec": {"f:duration": {}}}},
            ],
            **extra_meta,
        },
        "spec": {"duration": "1h", "maxDelay": "96h", "template": {"spec": {"template": {"spec": {}}}}},
        "status": {
            "phase": "Waiting",
            "plan": {"windows": [{"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}]},
            "conditions": [{"type": "Planned", "status": "True", "message": "x" * 200}] * 6,
        },
    }


@pytest.mark.parametrize(
    "extra_fields",
    [
        None,
        set(),
        {("spec",)},
        {("spec", "duration")},
        ["spec.template"],
        {("status", "plan")},
        {("metadata", "labels")},
    ],
)
@pytest.mark.parametrize(
    "meta", [{}, {"ownerReferences": [{"kind": "Deployment", "name": "d", "uid": "1"}]}, {"labels": {}}]
)
def test_lean_diff_base_is_kopfs_own(extra_fields: Any, meta: dict[str, Any]) -> None:
    raw = body(**meta)
    before = copy.deepcopy(raw)
    lean = LeanDiffBaseStorage(prefix="carbonshift.io", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="carbonshift.io", key="last-handled-configuration")
    built = lean.build(body=kopf.Body(raw), extra_fields=extra_fields)
    assert built == kopfs.build(body=kopf.Body(raw), extra_fields=extra_fields)
    assert ("spec" in built and "status" not in built) or extra_fields == {("status", "plan")}
    assert raw == before  # the body kopf keeps is not changed
    built["spec"]["duration"] = "2h"  # and the essence shares nothing with it
    assert raw["spec"]["duration"] == "1h"


@pytest.mark.parametrize(
    "essence",
    [
        LeanDiffBaseStorage(prefix="carbonshift.io", key="last-handled-configuration").build(body=kopf.Body(body())),
        kopf.AnnotationsDiffBaseStorage(prefix="carbonshift.io", key="x").build(body=kopf.Body(body(labels={}))),
        # only kopf's own annotations and no labels: the emptied stanzas go, metadata included
        {"spec": {"a": 1}, "metadata": {"annotations": {"carbonshift.io/create.handler": "{}"}, "labels": {}}},
        {"spec": {"a": 1}, "metadata": {"labels": {"team": "ml"}}, "status": {}},  # nothing of kopf's; empty status
        {"spec": {"a": 1}},
    ],
)
def test_lean_progress_clear_is_kopfs_own(essence: Any) -> None:
    before = copy.deepcopy(essence)
    lean = LeanProgressStorage(prefix="carbonshift.io")
    kopfs = kopf.AnnotationsProgressStorage(prefix="carbonshift.io")
    cleared = lean.clear(essence=essence)
    assert cleared == kopfs.clear(essence=copy.deepcopy(essence))
    assert essence == before  # the essence given is not changed
    assert not any(k.startswith("carbonshift.io/") for k in cleared.get("metadata", {}).get("annotations", {}))


def test_lean_diff_base_stores_and_fetches_as_kopf_does() -> None:
    raw = body()
    lean = LeanDiffBaseStorage(prefix="carbonshift.io", key="last-handled-configuration")
    essence = lean.build(body=kopf.Body(raw))
    patch = kopf.Patch()
    lean.store(body=kopf.Body(raw), patch=patch, essence=essence)
    raw["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    assert lean.fetch(body=kopf.Body(raw)) == essence


def test_resource_version_is_the_objects_own() -> None:
    raw = body()
    raw["spec"]["template"]["metadata"] = {"resourceVersion": "1"}  # (nothing stops a user writing one)
    # As the API server writes a custom resource: keys sorted at every level, no spaces.
    sent = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    assert sent.count(b'"resourceVersion":"') == 2
    assert resource_version(sent) == "4711"
    assert resource_version(json.dumps(raw, sort_keys=True).encode()) == "4711"  # spaced: parsed in full
    assert resource_version(b"{}") == ""


def test_kopfs_watch_stream_decodes_with_orjson_and_reads_the_same() -> None:
    import inspect

    import kopf._cogs.clients.api as kopf_api
    import orjson

    from carbonshift.handlers.state import _WatchJson, fast_watch_json

    assert fast_watch_json() and fast_watch_json()  # (twice: the second call finds its own decoder)
    assert kopf_api.json is _WatchJson
    assert "json.loads(" in inspect.getsource(kopf_api.stream)  # where kopf reads each watch line
    line = json.dumps({"type": "MODIFIED", "object": body()})
    assert _WatchJson.loads(line) == json.loads(line)
    assert _WatchJson.loads(line.encode()) == json.loads(line)
    assert _WatchJson.loads('{"n": 9223372036854775807}') == {"n": 2**63 - 1}  # Kubernetes' int64, exact
    odd = '{"x": NaN}'  # what orjson refuses and the standard library takes: read by the standard library
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(odd)
    assert math.isnan(_WatchJson.loads(odd)["x"])
    with pytest.raises(json.JSONDecodeError):
        _WatchJson.loads("{not json")
