"""The series the chart's Grafana dashboard queries, split into the operator's and the workers', for the
tests that scrape a real operator and a real worker and check that each exports its part."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "ferry" / "dashboards" / "ferry.json"
#: Series the operator exports (histograms by their family name); every other `ferry_` series is a worker's.
OPERATOR_SERIES = frozenset(
    {
        "ferry_copyjobs",
        "ferry_copyjobs_untracked",
        "ferry_reconcile_errors_total",
        "ferry_reconcile_duration_seconds",
        "ferry_api_requests_total",
        "ferry_copyjob_objects",
        "ferry_copyjob_expected_objects",
        "ferry_copyjob_bytes",
        "ferry_copyjob_expected_bytes",
        "ferry_copyjob_progress_ratio",
    }
)


def dashboard_series() -> set[str]:
    """Every `ferry_` series the dashboard's queries name, histograms by their family name."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\bferry_[a-z_]+", exprs)}
