"""The Grafana dashboard shipped in k8s/grafana covers every custom metric and Serve's own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deployments.metrics import METRICS

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "chatterbox-serve-dashboard.json"
)
BUILT_IN = (
    "ray_serve_deployment_request_counter_total",  # request rate
    "ray_serve_http_request_latency_ms_bucket",  # latency
    "ray_serve_deployment_replica_healthy",  # replicas
    "ray_serve_deployment_queued_queries",  # queue length
)


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_is_importable_grafana_json() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"]
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dash["templating"]["list"]}
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)


def test_every_custom_metric_has_a_panel() -> None:
    text = "\n".join(_exprs())
    missing = [m.name for m in METRICS if f"ray_{m.name}" not in text]
    assert missing == []


def test_serve_built_in_metrics_have_panels() -> None:
    text = "\n".join(_exprs())
    assert [m for m in BUILT_IN if m not in text] == []
