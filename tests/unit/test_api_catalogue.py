"""Every invalid manifest of the catalogue is refused by the models with its expected message; every example passes."""

from __future__ import annotations

import pytest

from carbonshift.api import ManifestError, parse_manifest
from tests.catalogue import InvalidCase, load_catalogue, load_examples

CASES = load_catalogue()
EXAMPLES = load_examples()


def test_catalogue_is_large_enough_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"CarbonAwareJob", "EnergyBudget", "ComputeCluster", "CarbonWindowPolicy"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_manifest_is_refused_with_its_message(case: InvalidCase) -> None:
    with pytest.raises(ManifestError) as refused:
        parse_manifest(case.manifest)
    assert case.model_error in str(refused.value)


def test_examples_cover_every_kind() -> None:
    assert len(EXAMPLES) >= 10
    kinds = {doc["kind"] for _, doc in EXAMPLES}
    assert kinds == {"CarbonAwareJob", "EnergyBudget", "ComputeCluster", "CarbonWindowPolicy"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{p.name}" for p, _ in EXAMPLES])
def test_example_is_accepted(example: tuple[object, dict[str, object]]) -> None:
    _, doc = example
    model = parse_manifest(doc)
    assert model.wire()["spec"]


def test_errors_name_the_field_path() -> None:
    case = next(c for c in CASES if c.name == "budget-selector-bad-operator")
    with pytest.raises(ManifestError) as refused:
        parse_manifest(case.manifest)
    assert "spec.selector.matchExpressions[0].operator" in str(refused.value)


def test_wrong_api_version_is_refused() -> None:
    doc = dict(CASES[0].manifest, apiVersion="batch.carbonaware.dev/v1alpha1")
    with pytest.raises(ManifestError, match=r"expected apiVersion carbonshift\.io/v1alpha1"):
        parse_manifest(doc)
