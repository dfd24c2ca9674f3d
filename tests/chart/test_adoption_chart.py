"""The chart's adoption (docs/design/adoption.md): on by default with the webhook, its MutatingWebhookConfiguration
created empty (Helm owns it, the operator fills it), and the rights the operator needs for it; off when asked."""

from __future__ import annotations

from carbonshift.api import rbac
from carbonshift.commands import run as run_command
from tests.chart.helm import find, one
from tests.chart.helm import render as render_chart
from tests.chart.test_chart import operator_container, parsed_args, rule_set


def test_adoption_is_on_with_the_webhook_and_its_configuration_is_the_charts() -> None:
    docs = render_chart({})
    args = parsed_args(docs)
    assert args.webhook is True and args.adoption is True
    mutating = one(docs, "MutatingWebhookConfiguration")
    assert mutating["webhooks"] == [] and mutating["metadata"]["name"] == args.webhook_configuration
    assert one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"] == args.webhook_configuration
    rules = rule_set(rbac.CLUSTER_RULES)
    assert {("admissionregistration.k8s.io", "mutatingwebhookconfigurations", v) for v in ("create", "patch")} <= rules
    assert {("carbonshift.io", "carbonawarejobs", v) for v in ("create", "delete")} <= rules  # the tracking objects
    assert {("batch", "jobs", "patch"), ("jobset.x-k8s.io", "jobsets", "watch")} <= rules  # mark, release, watch
    # The flags parse as `carbonshift run` takes them (the image's entrypoint).
    assert "--adoption" in operator_container(docs)["args"]
    assert run_command.webhook_options(args).configuration == mutating["metadata"]["name"]


def test_adoption_off_renders_no_mutating_configuration() -> None:
    docs = render_chart({"webhook": {"adoption": False}})
    assert parsed_args(docs).adoption is False
    assert not find(docs, "MutatingWebhookConfiguration")
    assert one(docs, "ValidatingWebhookConfiguration")
    off = render_chart({"webhook": {"enabled": False}})
    assert not find(off, "MutatingWebhookConfiguration") and parsed_args(off).adoption is False
