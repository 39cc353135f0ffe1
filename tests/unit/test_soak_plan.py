"""The soak script's request mix and its memory verdict (the run itself is not a CI test)."""

from __future__ import annotations

from collections import Counter

from chatterbox_serve.audio import AudioFormat
from tools.soak import Tally, plan_requests, report


def test_the_mix_covers_every_format_kind_and_voice() -> None:
    plans = plan_requests(2000, ["default", "alloy", "nova"])
    kinds = Counter(p.kind for p in plans)
    assert set(kinds) == {"file", "audio-stream", "sse", "bad-input", "engine-failure"}
    assert 10 <= kinds["engine-failure"] <= 40 and 10 <= kinds["bad-input"] <= 40
    assert {p.body["response_format"] for p in plans} == {f.value for f in AudioFormat}
    assert {p.body["voice"] for p in plans} == {"default", "alloy", "nova"}
    assert plan_requests(50, ["a"]) == plan_requests(50, ["a"])  # reproducible


def test_memory_verdict_uses_growth_after_warmup() -> None:
    mib = 2**20
    phases = {
        "before": {"model#a": 100 * mib, "audio#b": 100 * mib},
        "after_warmup": {"model#a": 200 * mib, "audio#b": 200 * mib},
        "end": {"model#a": 210 * mib, "audio#b": 230 * mib},
    }
    result = report(phases, Tally(), 10.0, 2000)
    assert result["replicas"]["model#a"]["growth_after_warmup_pct"] == 5.0
    assert result["replicas"]["audio#b"]["growth_after_warmup_pct"] == 15.0
    assert result["memory_target_met"] is False
    phases["end"]["audio#b"] = 205 * mib
    assert report(phases, Tally(), 10.0, 2000)["memory_target_met"] is True
