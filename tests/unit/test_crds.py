"""The generated CRDs are structural, complete, and in sync with the committed files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from carbonshift.api.crdgen import RESOURCES, SchemaError, crd, structural
from carbonshift.cli import main

REPO = Path(__file__).resolve().parents[2]
KNOWN_MARKERS = {
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}
ALLOWED_KEYS = {
    "type", "description", "properties", "items", "required", "enum", "pattern", "format", "default",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxLength", "minLength", "maxItems",
    "additionalProperties",
} | KNOWN_MARKERS  # fmt: skip


def walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found += walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{*}}")
    return found


@pytest.mark.parametrize("resource", RESOURCES, ids=[r.kind for r in RESOURCES])
def test_schema_is_structural(resource: Any) -> None:
    schema = crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema, resource.kind):
        assert "type" in node, f"{path} has no type"
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert set(node) <= ALLOWED_KEYS, f"{path}: unexpected keys {set(node) - ALLOWED_KEYS}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"]["required"]), f"{path}: list-map keys must be required"
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "reason"} and rule["rule"] and rule["message"], path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object", path
        if path.count(".") > 1:
            assert node.get("description") or path.endswith(("[*]", "{*}")), f"{path} has no description"
    assert "$ref" not in yaml.safe_dump(schema)


def test_carbonawarejob_crd_has_columns_short_name_and_status_subresource() -> None:
    caj = crd(RESOURCES[0])
    version = caj["spec"]["versions"][0]
    assert caj["spec"]["names"]["shortNames"] == ["caj"]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Phase", "Cluster", "Next", "Deadline", "CO2e", "Saved", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    assert "has(self.deadline) != has(self.maxDelay)" in rules
    assert spec["properties"]["policy"]["enum"] == ["Optimal", "Threshold", "Immediate"]
    assert spec["properties"]["policy"]["default"] == "Optimal"


@pytest.mark.parametrize("resource", RESOURCES, ids=[r.kind for r in RESOURCES])
def test_every_printer_column_names_a_field_of_the_schema(resource: Any) -> None:
    """A column whose path the schema lacks stays empty forever: the API server prunes what the status writes
    there (CO2e did, as .status.display.co2E)."""
    version = crd(resource)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version.get("additionalPrinterColumns", []):
        path = re.sub(r"\[\?\(.*?\)\]", "[*]", column["jsonPath"]).lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for key in path:
            name = key.removesuffix("[*]")
            assert name in node.get("properties", {}), f"column {column['name']}: {column['jsonPath']} not in schema"
            node = node["properties"][name]
            if key.endswith("[*]"):
                node = node["items"]


def test_scopes_and_short_names() -> None:
    by_kind = {r.kind: crd(r) for r in RESOURCES}
    assert by_kind["ComputeCluster"]["spec"]["scope"] == "Cluster"
    assert by_kind["EnergyBudget"]["spec"]["names"]["shortNames"] == ["eb"]
    assert by_kind["ComputeCluster"]["spec"]["names"]["shortNames"] == ["cc"]


def test_union_types_are_refused_as_not_structural() -> None:
    with pytest.raises(SchemaError, match="unions"):
        structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {}, {}, "spec.x")


def test_untyped_nodes_are_refused() -> None:
    with pytest.raises(SchemaError, match="needs a type"):
        structural({"description": "no type"}, {}, {}, "spec.x")


def test_committed_crds_match_the_models() -> None:
    assert main(["crds", "--check", "--out", str(REPO / "crds")]) == 0


def test_check_names_the_file_that_drifted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(REPO / "crds", tmp_path / "crds")
    drifted = tmp_path / "crds" / "carbonshift.io_energybudgets.yaml"
    drifted.write_text(drifted.read_text().replace("Monthly", "Yearly"))
    assert main(["crds", "--check", "--out", str(tmp_path / "crds")]) == 1
    assert "carbonshift.io_energybudgets.yaml: differs from the API models" in capsys.readouterr().err
    assert main(["crds", "--out", str(tmp_path / "crds")]) == 0
    assert main(["crds", "--check", "--out", str(tmp_path / "crds")]) == 0
