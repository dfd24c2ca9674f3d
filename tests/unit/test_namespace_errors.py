"""Which API refusals mean "the namespace is gone or going" (adapters/kube.py): the adoption handler then stops
instead of raising into kopf's retries, and the CarbonAwareJob handler waits for the namespace to go."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.kube import namespace_missing, namespace_terminating


def refusal(status: int, details: dict[str, object]) -> ApiException:
    exc = ApiException(status=status, reason="refused")
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "code": status, "details": details})
    return exc


def test_a_deleted_namespace_is_told_apart_from_a_resource_not_served() -> None:
    gone = refusal(404, {"name": "adoption-c16b6f", "kind": "namespaces"})
    assert namespace_missing(gone) and not namespace_terminating(gone)
    unserved = refusal(404, {"group": "carbonshift.io", "kind": "carbonawarejobs"})  # CRD not installed
    assert not namespace_missing(unserved)
    assert not namespace_missing(ApiException(status=404))  # no body: not known to be the namespace


def test_a_terminating_namespace_is_not_a_permission_problem() -> None:
    terminating = refusal(403, {"kind": "events", "causes": [{"reason": "NamespaceTerminating"}]})
    assert namespace_terminating(terminating) and not namespace_missing(terminating)
    assert not namespace_terminating(refusal(403, {"kind": "carbonawarejobs"}))  # RBAC: a real refusal
