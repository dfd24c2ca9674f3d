"""The catalogue of invalid manifests and the examples, loaded for the model tests and the API-server tests.

Each invalid case is a valid base object (base.yaml) with one deliberate mistake (invalid.yaml). `server` is the
text the API server must answer with; `model` is the text carbonshift's models answer with, where it differs.
Cases marked `via: webhook` pass the CRD's schema and CEL rules and are refused by the admission webhook (a Job
template the API server refuses, a rule CEL cannot express); `load_catalogue()` gives the others, which the CRD
alone refuses, and `load_catalogue("webhook")` these.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
EXAMPLES = HERE.parent.parent / "examples"
DELETE = "~delete"


@dataclass(frozen=True)
class InvalidCase:
    name: str
    manifest: dict[str, Any]
    expected_error: str
    model_error: str
    via: str = "crd"

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


def _apply(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `value` at a dotted path; a number indexes a list (`containers.0.image`)."""
    *parents, leaf = dotted.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(leaf)] = value
    elif value == DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def load_catalogue(via: str = "crd") -> list[InvalidCase]:
    bases = yaml.safe_load((HERE / "base.yaml").read_text(encoding="utf-8"))
    cases = []
    for raw in yaml.safe_load((HERE / "invalid.yaml").read_text(encoding="utf-8")):
        if raw.get("via", "crd") != via:
            continue
        manifest = copy.deepcopy(bases[raw["base"]])
        manifest["metadata"]["name"] = raw["name"]
        for path, value in raw["set"].items():
            _apply(manifest, path, value)
        model = raw.get("model", raw["server"])
        cases.append(InvalidCase(raw["name"], manifest, raw["server"], model, raw.get("via", "crd")))
    return cases


def load_examples() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every examples/*.yaml file, with its path."""
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path, doc))
    return out
