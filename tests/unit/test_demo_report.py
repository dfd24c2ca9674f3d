"""The demo's summary: avoided emissions split into temporal and spatial parts, from the jobs' receipts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from carbonshift_dev.demo import _report


def status(cluster: str, kwh: float, emitted: float, temporal: float, home: float) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "phase": "Succeeded",
        "energyKWh": kwh,
        "energySource": "dcgm",
        "emissionsGrams": emitted,
        "baselineEmissionsGrams": home,
        "avoidedEmissionsGrams": home - emitted,
        "energy": {
            "measuredKWh": kwh,
            "emissionsGrams": emitted,
            "baselineGrams": temporal,
            "homeBaselineGrams": home,
            "homeCluster": "gpu-de" if cluster != "gpu-de" else None,
        },
    }


async def test_jobs_moved_to_the_cleaner_grid_show_a_positive_spatial_part(tmp_path: Path) -> None:
    """Two jobs ran in the ~50 g cluster (home: the 400-500 g one), one at home a little later than submitted."""
    items = [
        {"metadata": {"name": "pretrain"}, "status": status("gpu-gb", 10.0, 550.0, 600.0, 5400.0)},
        {"metadata": {"name": "finetune"}, "status": status("gpu-gb", 2.0, 110.0, 100.0, 1000.0)},
        {"metadata": {"name": "hotfix"}, "status": status("gpu-de", 1.0, 480.0, 500.0, 500.0)},
    ]
    end = datetime(2023, 6, 2, tzinfo=UTC)
    report = await _report(items, SimpleNamespace(jobs={}), end - timedelta(hours=24), end, tmp_path)
    totals = report["totals"]
    assert totals["temporal_kg"] == pytest.approx((50 - 10 + 20) / 1000)
    assert totals["spatial_kg"] == pytest.approx((4800 + 900 + 0) / 1000)
    assert totals["avoided_kg"] == pytest.approx(totals["temporal_kg"] + totals["spatial_kg"])
    assert totals["avoided_kg"] > 0 and totals["saved_pct"] > 0
    assert json.loads((tmp_path / "demo-report.json").read_text())["jobs"][0]["spatial_avoided_g"] == 4800.0
