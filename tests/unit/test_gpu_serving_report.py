"""`tools.gpu.gpu_serving report`: the report's JSON from the parts the GPU runs wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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
            "vllm": "0.26.0",
            "t3_alone_audio_s_per_s": 400.0,
            "s3gen_alone_audio_s_per_s": 200.0,
            "engine_audio_s_per_s": 185.0,
            "gpu_busy_fraction": 0.93,
        },
    )
    _write(
        tmp_path,
        "serve",
        {"ttfa_p50_ms_c1": 240.0, "ttfa_p50_ms_c32": 650.0, "serve_audio_s_per_s_c64": 170.0},
    )
    out = report(tmp_path, "H200 test", previous={"engine_audio_s_per_s": 60.2, "previous": {}})
    assert KEYS <= out.keys() and out["machine"] == "H200 test, vLLM 0.26.0"
    goals = out["goals"]
    assert goals["1_s3gen_250"]["met"] is True
    # The issue's ratio: 0.9 x min(T3 400, S3Gen 260) = 234, missed; against S3Gen alone
    # on the engine's own items, 0.9 x min(400, 200) = 180, met.
    assert goals["2_engine_0.9_min_stages"] == {"met": False, "measured": 185.0, "target": 234.0}
    assert goals["2_engine_0.9_min_stages_same_items"]["met"] is True
    assert goals["2_engine_200"]["met"] is False
    # Latency goals are met from below.
    assert goals["3_ttfa_c1_250ms"]["met"] is True
    assert goals["3_ttfa_c32_500ms"]["met"] is False
    # 170 >= 0.9 x 185 = 166.5
    assert goals["4_serve_0.9_engine"]["met"] is True
    # The last round is kept beside, one level deep.
    assert out["previous"] == {"engine_audio_s_per_s": 60.2}


def test_a_part_that_did_not_run_leaves_its_goals_unjudged(tmp_path: Path) -> None:
    _write(tmp_path, "s3gen", {"s3gen_audio_s_per_s": 170.0})
    out = report(tmp_path, "H200 test")
    assert out["engine_audio_s_per_s"] is None
    assert out["goals"]["2_engine_200"]["met"] is None
    assert out["goals"]["2_engine_0.9_min_stages"]["met"] is None
    assert out["goals"]["1_s3gen_250"]["met"] is False
    assert "previous" not in out


def test_compilation_at_first_start_and_from_the_cache_side_by_side(tmp_path: Path) -> None:
    run = {"variant": "bf16-compile", "compile": "default", "warmup_s": 150.0}
    run["compile_active"] = True
    eager = {"variant": "bf16-bias", "compile": "off", "warmup_s": 0.5, "compile_active": False}
    # A compile mode that ran eagerly (a CPU) compiled nothing: not a compilation time.
    cpu = {"variant": "bf16-fp8-compile", "compile": "default", "warmup_s": 3.0}
    cpu["compile_active"] = False
    _write(tmp_path, "s3gen", {"runs": [run, eager, cpu]})
    _write(tmp_path, "s3gen-restart", {"runs": [dict(run, warmup_s=20.0)]})
    out = report(tmp_path, "H200 test")
    assert out["s3gen_compile_start_s"] == {"bf16-compile": {"cold": 150.0, "cached": 20.0}}


async def test_windows_credit_items_in_flight_by_their_share_of_the_window() -> None:
    """Two workers, items of 0.3 s making 1 audio-s each: about 6.7 audio-s/s whatever
    the windows' edges cut, where counting finished items only would vary with the cut."""
    import asyncio

    from tools.gpu.gpu_serving import Windows, credited, windowed

    assert credited([(0.0, 2.0, 4.0)], 1.0, 3.0) == 2.0  # half its time, half its audio
    assert credited([(0.0, 2.0, 4.0), (1.5, 1.9, 1.0)], 1.0, 1.8) == pytest.approx(1.6 + 0.75)

    async def item(i: int) -> float:
        await asyncio.sleep(0.3)
        return 1.0

    result = await windowed(2, item, Windows(warmup_s=0.2, window_s=0.45, count=2))
    assert len(result["window_rates"]) == 2
    for rate in result["window_rates"]:
        assert rate == pytest.approx(2 / 0.3, rel=0.15)
    assert result["items"] >= 6


def test_the_engine_takes_the_whole_compile_only_where_it_won_inside_the_bounds() -> None:
    from tools.gpu.gpu_serving import pick_s3gen_compile

    def row(variant: str, compile_mode: str, rate: float, fp8: bool = False) -> dict[str, Any]:
        return {
            "variant": variant,
            "compile": compile_mode,
            "precision": "bf16",
            "steps": 10,
            "audio_s_per_s": rate,
            "fp8_active": fp8,
        }

    def good(variant: str, ok: bool = True) -> dict[str, Any]:
        return {"variant": variant, "mel_ok": ok, "wav_ok": True}

    runs = [row("bf16-graphs", "graphs", 160.0), row("bf16-compile", "default", 200.0)]
    faster = {"runs": runs, "quality": [good("bf16-graphs"), good("bf16-compile")]}
    assert pick_s3gen_compile(faster) == "default"
    outside = {"runs": runs, "quality": [good("bf16-graphs"), good("bf16-compile", ok=False)]}
    assert pick_s3gen_compile(outside) == "graphs"
    slower = dict(faster, runs=[runs[0], row("bf16-compile", "default", 150.0)])
    assert pick_s3gen_compile(slower) == "graphs"
    fp8 = dict(faster, runs=[runs[0], row("bf16-compile", "default", 300.0, fp8=True)])
    assert pick_s3gen_compile(fp8) == "graphs"
    assert pick_s3gen_compile({}) == "graphs"  # the s3gen part did not run
    # Eager bf16 counts as a baseline too (graphs may have been cut by the budget).
    eager = {"runs": [row("bf16-bias", "off", 210.0), runs[1]], "quality": faster["quality"]}
    eager["quality"] = [*faster["quality"], good("bf16-bias")]
    assert pick_s3gen_compile(eager) == "graphs"


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
