"""The tenant sweep's own judgements: a refusal must be the right one, in the envelope."""

from __future__ import annotations

import httpx

from tools.tenant_sweep import ATTACKS, Outcome, _refusal, p95, table


def _response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://t/x"))


def test_a_refusal_counts_only_with_its_status_code_and_envelope() -> None:
    envelope = {"error": {"message": "m", "type": "t", "param": None, "code": "operator_only"}}
    assert _refusal(_response(403, envelope), 403, "operator_only") == (403, "operator_only", [])
    assert _refusal(_response(200, envelope), 403, "operator_only")[2]  # not refused
    assert _refusal(_response(403, envelope), 403, "too_many_jobs")[2]  # refused otherwise
    assert _refusal(_response(403, {"detail": "no"}), 403, "operator_only")[2]  # no envelope


def test_latency_p95_and_the_table() -> None:
    samples = [(float(i), 0.1 * (i + 1), 200) for i in range(20)]
    assert 1.9 <= p95(samples) <= 2.0
    rows = table([Outcome("3", "retry past the cap", 200, None, 0.5, ["2 retried past the cap"])])
    assert "FAIL: 2 retried past the cap" in rows
    assert {a.item for a in ATTACKS} >= {"1", "2", "3", "4", "8", "10", "12"}
