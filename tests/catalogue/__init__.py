"""The catalogue of invalid manifests and the examples, loaded for the model tests and the API-server tests.

Each invalid case is a valid base object (base.yaml) with one deliberate mistake (invalid.yaml). `server` is the
text the API server must answer with; `model` is the text carbonshift's models answer with, where it differs.
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

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


def _apply(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value == DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def load_catalogue() -> list[InvalidCase]:
    bases = yaml.safe_load((HERE / "base.yaml").read_text(encoding="utf-8"))
    cases = []
    for raw in yaml.safe_load((HERE / "invalid.yaml").read_text(encoding="utf-8")):
        manifest = copy.deepcopy(bases[raw["base"]])
        manifest["metadata"]["name"] = raw["name"]
        for path, value in raw["set"].items():
            _apply(manifest, path, value)
        cases.append(InvalidCase(raw["name"], manifest, raw["server"], raw.get("model", raw["server"])))
    return cases


def load_examples() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every examples/*.yaml file, with its path."""
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path, doc))
    return out
