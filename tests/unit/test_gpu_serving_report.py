"""`tools.gpu.gpu_serving report`: the report's JSON from the parts the GPU runs wrote."""

from __future__ import annotations

import json
from pathlib import Path

from tools.gpu.gpu_serving import report

KEYS = {
    "s3gen_audio_s_per_s",
    "s3gen_audio_s_per_s_5_steps",
    "engine_audio_s_per_s",
    "t3_alone_audio_s_per_s",
    "ttfa_p50_ms_c1",
    "ttfa_p50_ms_c32",
    "gpu_busy_fraction",
    "machine",
}


def _write(parts: Path, name: str, data: dict[str, object]) -> None:
    (parts / f"{name}.json").write_text(json.dumps(data))


def test_the_report_has_the_issues_keys_and_judges_each_goal(tmp_path: Path) -> None:
    _write(tmp_path, "s3gen", {"s3gen_audio_s_per_s": 260.0, "s3gen_audio_s_per_s_5_steps": 390})
    _write(
        tmp_path,
        "engine",
        {
            "t3_alone_audio_s_per_s": 400.0,
            "s3gen_alone_audio_s_per_s": 200.0,
            "engine_audio_s_per_s": 185.0,
            "gpu_busy_fraction": 0.93,
        },
    )
    _write(tmp_path, "serve", {"ttfa_p50_ms_c1": 240.0, "ttfa_p50_ms_c32": 650.0})
    out = report(tmp_path, "H200 test")
    assert KEYS <= out.keys() and out["machine"] == "H200 test"
    goals = out["goals"]
    assert goals["1_s3gen_250"]["met"] is True
    assert goals["1_s3gen_5_steps_400"]["met"] is False
    # 0.9 x min(400, 200) = 180: met, though short of the absolute 250.
    assert goals["2_engine_0.9_min_stages"] == {"met": True, "measured": 185.0, "target": 180.0}
    assert goals["2_engine_250"]["met"] is False
    # Latency goals are met from below.
    assert goals["3_ttfa_c1_250ms"]["met"] is True
    assert goals["3_ttfa_c32_500ms"]["met"] is False


def test_a_part_that_did_not_run_leaves_its_goals_unjudged(tmp_path: Path) -> None:
    _write(tmp_path, "s3gen", {"s3gen_audio_s_per_s": 170.0})
    out = report(tmp_path, "H200 test")
    assert out["engine_audio_s_per_s"] is None
    assert out["goals"]["2_engine_250"]["met"] is None
    assert out["goals"]["1_s3gen_250"]["met"] is False


def test_the_turbo_report_sets_turbo_beside_the_original_of_the_same_run(tmp_path: Path) -> None:
    from tools.gpu.gpu_serving import engine_part_name, serve_part_name, turbo_report

    common = {"gpu_busy_fraction": 0.9, "startup_s": 100.0}
    _write(
        tmp_path,
        engine_part_name("chatterbox-turbo"),
        {
            **common,
            "family": "chatterbox-turbo",
            "workers": 64,
            "diffusion_steps": 2,
            "engine_audio_s_per_s": 640.0,
            "t3_alone_audio_s_per_s": 900.0,
            "s3gen_alone_audio_s_per_s": 1200.0,
            "engine_ttfa_p50_ms_c1": 120.0,
            "engine_ttfa_p50_ms_c32": 400.0,
        },
    )
    _write(
        tmp_path,
        engine_part_name("chatterbox-multilingual"),
        {**common, "engine_audio_s_per_s": 160.0, "s3gen_alone_audio_s_per_s": 150.0},
    )
    out = turbo_report(tmp_path, "H200 test")
    assert (out["engine_audio_s_per_s"], out["s3gen_audio_s_per_s"], out["s3gen_steps"]) == (
        640.0,
        1200.0,
        2,
    )
    # Without the HTTP part, first audio is the engine's own figure, and says so.
    assert (out["ttfa_p50_ms_c1"], out["ttfa_measured"]) == (120.0, "engine")
    assert out["turbo_over_original"]["engine_audio_s_per_s"] == 4.0
    assert out["original_same_run"]["engine_audio_s_per_s"] == 160.0
    assert out["goals"]["engine_600"]["met"] and out["goals"]["ttfa_c1_150ms"]["met"]
    assert out["parts_missing"] == ["http"]
    _write(
        tmp_path,
        serve_part_name("chatterbox-turbo"),
        {"ttfa_p50_ms_c1": 180.0, "ttfa_p50_ms_c32": 700.0},
    )
    out = turbo_report(tmp_path, "H200 test")
    assert (out["ttfa_p50_ms_c1"], out["ttfa_p50_ms_c32"], out["ttfa_measured"]) == (
        180.0,
        700.0,
        "http",
    )
    assert out["goals"]["ttfa_c1_150ms"]["met"] is False
