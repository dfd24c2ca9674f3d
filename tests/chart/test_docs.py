"""The operator docs cover what the code declares: every condition type and reason in operations.md, every metric in
observability.md, every design note in docs/design/README.md, and every relative link points at a file."""

from __future__ import annotations

import re

import pytest

from carbonshift import metrics
from carbonshift.api.conditions import ConditionType, Reason
from tests.chart.helm import REPO

DOCS = REPO / "docs"
OPERATOR_DOCS = (
    "install.md",
    "providers.md",
    "observability.md",
    "operations.md",
    "design/README.md",
    "design/chart.md",
)


@pytest.mark.parametrize("reason", [r.value for r in Reason])
def test_operations_explains_every_condition_reason(reason: str) -> None:
    rows = [line for line in (DOCS / "operations.md").read_text().splitlines() if line.startswith(f"| `{reason}` |")]
    assert len(rows) == 1, f"docs/operations.md needs one table row for the reason {reason}"
    meaning, todo = rows[0].split(" | ")[2:4]
    assert meaning.strip() and todo.strip()


def test_operations_names_every_condition_type() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = [t.value for t in ConditionType if f"`{t.value}`" not in text]
    assert not missing


def test_observability_lists_every_exported_metric() -> None:
    text = (DOCS / "observability.md").read_text()
    for family in metrics.REGISTRY.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in text, name


def test_design_index_lists_every_design_note() -> None:
    index = (DOCS / "design" / "README.md").read_text()
    for note in sorted((DOCS / "design").glob("*.md")):
        assert note.name == "README.md" or f"]({note.name})" in index, note.name


@pytest.mark.parametrize("page", OPERATOR_DOCS)
def test_relative_links_resolve(page: str) -> None:
    path = DOCS / page
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{page}: broken link {target}"
