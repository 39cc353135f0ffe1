"""The one-command S3Gen report runs end to end on the CPU and writes what the issue asks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_smoke_run_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.gpu.s3gen_speed import main

    out = tmp_path / "report" / "s3gen.json"
    checkpoint = tmp_path / "ckpt"  # missing: the command writes a tiny one
    main(
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--smoke",
            "--variants",
            "bf16,fp32",
            "--batch-sizes",
            "2",
            "--steps",
            "2",
            "--items",
            "2",
        ]
    )
    report = json.loads(out.read_text())
    assert (checkpoint / "s3gen.safetensors").exists()
    assert report["failures"] == []
    assert {(r["variant"], r["steps"], r["batch"]) for r in report["runs"]} == {
        ("fp32", 2, 2),
        ("bf16", 2, 2),
    }
    # On the CPU "auto" keeps the bias path: flash-attention's varlen kernel is CUDA only.
    assert {r["attention"] for r in report["runs"]} == {"bias"}
    assert all(r["audio_s_per_s"] > 0 and r["audio_s"] > 0 for r in report["runs"])
    (quality,) = report["quality"]
    assert quality["variant"] == "bf16" and quality["steps"] == 10
    # The bounds themselves are asserted in test_s3gen_quality.py; here, that the report
    # applies them (sub-second smoke items sit close to the mel bound in bf16).
    assert 0 < quality["max_rel_l2_mel"] < 0.05
    assert quality["mel_ok"] == (quality["max_rel_l2_mel"] <= 1e-2)
    assert report["vocoder_stage"]["bf16"]["max_rel_l2_wav"] > 1e-3
    eligible = {"fp32"} | ({"bf16"} if quality["mel_ok"] and quality["wav_ok"] else set())
    best = max(r["audio_s_per_s"] for r in report["runs"] if r["variant"] in eligible)
    assert report["s3gen_audio_s_per_s"] == best
    assert report["s3gen_audio_s_per_s_goal"] == {"target": 250.0, "met": False}
    profile = report["profile"]
    best_row = report["s3gen_audio_s_per_s_best"]
    assert (profile["variant"], profile["steps"], profile["batch"]) == (
        best_row["variant"],
        2,
        2,
    )
    stages = ("flow_other_ms", "estimator_ms", "vocoder_ms")
    assert all(profile[k] > 0 for k in (*stages, "estimator_step_ms"))
    assert abs(sum(profile[k] for k in stages) - profile["total_ms"]) < 1.0
    assert abs(sum(profile["share"].values()) - 1.0) < 0.01
    out = capsys.readouterr().out.splitlines()
    assert "best 10 steps" in out[-1]
    assert any(line.startswith("profile ") for line in out)


def test_unknown_variant_is_refused_before_any_work(tmp_path: Path) -> None:
    from tools.gpu.s3gen_speed import main

    with pytest.raises(SystemExit, match="bf16-varlen"):  # the message lists the known ones
        main(
            ["--checkpoint", str(tmp_path / "c"), "--out", str(tmp_path / "o.json")]
            + ["--smoke", "--variants", "bf16-flash"]
        )
    assert not (tmp_path / "c").exists()
