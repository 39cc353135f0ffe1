"""The benchmark's quick mode runs end to end and writes a complete report (speed not asserted)."""

from __future__ import annotations

import json

from tests.conftest import SHARED
from tools.bench.__main__ import main

LEVEL_FIELDS = {
    "workload",
    "concurrency",
    "requests",
    "errors",
    "wall_s",
    "audio_s",
    "throughput_audio_s_per_s",
    "requests_per_s",
    "ratio_to_engine_capacity",
    "latency",
    "stages",
    "batching",
}
STAGE_FIELDS = {"chunk_s", "queue_s", "engine_s", "encode_s", "total_s", "ingress_s"}
BATCH_FIELDS = {"engine_calls", "mean_items_per_call", "items_per_call_histogram", "busy_fraction"}


def test_quick_benchmark_writes_every_field(tmp_path, capsys):
    assert (
        main(
            [
                "--quick",
                "--out",
                str(tmp_path),
                "--long-text",
                str(SHARED / "data" / "texts" / "long-en.txt"),
            ]
        )
        == 0
    )

    report = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report) == {
        "meta",
        "encoding",
        "engine",
        "baseline",
        "served",
        "control",
        "long_text",
        "ttfb",
        "targets",
    }
    assert {"machine", "cost_model", "settings_overrides", "options"} <= set(report["meta"])
    assert set(report["encoding"]) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}
    assert all(e["realtime_per_cpu_s"] > 0 for e in report["encoding"].values())
    assert set(report["engine"]["capacity"]) == {"short", "long"}
    for workload in ("short", "long"):
        assert [lv["concurrency"] for lv in report["served"][workload]] == [1, 4]
        for level in report["served"][workload]:
            assert LEVEL_FIELDS <= set(level)
            assert level["errors"] == 0 and level["audio_s"] > 0
            assert {"p50_s", "p95_s", "p99_s"} <= set(level["latency"])
            assert STAGE_FIELDS <= set(level["stages"])
            assert BATCH_FIELDS <= set(level["batching"])
            assert level["batching"]["engine_calls"] > 0
        for fmt in ("audio", "sse"):
            assert report["ttfb"][workload][fmt]["errors"] == 0
            assert report["ttfb"][workload][fmt]["ttfb_p50_s"] > 0
        assert report["baseline"][workload]["mean_batch"] == 1.0
    assert [lv["response_format"] for lv in report["control"]["short"]] == ["pcm", "pcm"]
    assert all(lv["errors"] == 0 for lv in report["control"]["short"])
    assert report["long_text"]["errors"] == 0 and report["long_text"]["speedup"] > 0
    assert report["long_text"]["pcm_errors"] == 0 and report["long_text"]["pcm_speedup"] > 0
    assert len(report["targets"]) == 13
    assert all({"name", "value", "target", "met"} <= set(t) for t in report["targets"])
    assert "| short, mp3 | 4 |" in capsys.readouterr().out
