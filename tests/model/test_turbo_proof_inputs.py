"""The reference side of the Turbo vLLM proof (tools/gpu/turbo_reference.py) on the CPU.

What the GPU proof holds vLLM against must itself be right: our prompt rows and logits
against upstream chatterbox-tts 0.1.7's own T3 (tiny Turbo checkpoint), and the two
sampling orders equal where the order cannot matter and apart where it does. Its `load`
part runs here with the reference standing in for vLLM's engines, and its report must
fail on a bad `load.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from chatterbox_serve.model.turbo import checkpoint
from tests.model.proof_parts import GREEDY_WITHIN_BOUNDS
from tools.gpu.turbo_reference import (
    Chain,
    reference_logits,
    total_variation,
    upstream_logits,
    upstream_order,
    upstream_rows,
    upstream_turbo_t3,
    vllm_order,
)

START = 6561
TOKENS = [17, 2, 6000, 4299, 17, 6560, 0, 3, 3, 812, 45, 1000, 17, 17]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    from tools.write_checkpoint import write_turbo_checkpoint

    directory = write_turbo_checkpoint(
        tmp_path_factory.mktemp("turbo"), tiny=True, seed=5, with_s3gen=False
    )
    ours = checkpoint.load_t3(directory)
    return ours, upstream_turbo_t3(ours, directory), directory


def _rows(models: tuple[Any, Any, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    ours, up, _ = models
    gen = torch.Generator().manual_seed(2)
    speaker = torch.randn(1, 256, generator=gen)
    prompt = torch.randint(0, 6561, (1, 375), generator=gen)
    ids = [5, 80, 33, 2, 199]
    with torch.inference_mode():
        rows = ours.prefill_embeds(ours.conditioning(speaker, prompt)[0], ids, uncond=False)
    return rows, upstream_rows(up, speaker, prompt, ids)


def test_prompt_rows_and_logits_are_upstreams(models: tuple[Any, Any, Path]) -> None:
    ours, up, _ = models
    rows, theirs = _rows(models)
    assert rows.shape == theirs.shape == (1 + 375 + 5 + 1, 64)
    assert float((rows - theirs).abs().max()) < 1e-6
    gap = reference_logits(ours, rows, TOKENS) - upstream_logits(up, theirs, TOKENS)
    assert float(gap.abs().max()) < 1e-5


def test_sampling_orders_agree_without_penalty_and_part_with_it(
    models: tuple[Any, Any, Path],
) -> None:
    ours, _, _ = models
    rows, _ = _rows(models)
    logits = reference_logits(ours, rows, TOKENS) * 20  # sharper than random weights give
    plain = Chain(repetition_penalty=1.0)
    same = total_variation(
        upstream_order(logits, TOKENS, plain, START), vllm_order(logits, TOKENS, plain, START)
    )
    assert float(same.max()) < 1e-6
    # Where a spoken token decides the top_k edge, the orders part: upstream keeps the
    # spoken token (filtered before the penalty), vLLM the runner-up.
    edge = torch.zeros(2, 6563)
    edge[:, 100], edge[:, 200] = 10.0, 8.0
    spoken = [100, 100]
    chain = Chain(top_k=1, repetition_penalty=2.0)
    up, ours_order = (
        upstream_order(edge, spoken, chain, START),
        vllm_order(edge, spoken, chain, START),
    )
    assert torch.equal(
        total_variation(up, ours_order), torch.tensor([0.0, 1.0], dtype=torch.float64)
    )
    assert float(up[1, 100]) == 0.0 and float(ours_order[1, 200]) == 0.0


# ---- the `load` part (preemption, chi-square) and the report's judgement of it ----------


def _parts(tmp: Path, load: dict[str, Any]) -> Path:
    """Parts as the GPU writes them, every figure within its bound but `load`'s own."""
    summary = dict(GREEDY_WITHIN_BOUNDS)
    parts = {
        "exact": {
            "vllm": "0.26.0",
            "device": "test",
            "upstream_prompt_rows": 1e-7,
            "upstream_backbone_logits": 1e-5,
            "greedy": summary,
            "sampling": {"max_abs_logprob_diff": 2e-5, "support_mismatches": 0},
            "planted": {"bug": {**summary, "max_abs_logprob_diff": 3.0}},
        },
        "served": {
            "greedy": {**summary, "max_mean_kl": 4e-5},
            "stops": {"all_at_stop_token": True, "items_with_token_2_before_the_end": 20},
        },
        "load": load,
    }
    for name, body in parts.items():
        (tmp / f"{name}.json").write_text(json.dumps(body))
    return tmp


GOOD_LOAD = {
    "preemption": {"kv_blocks": 51, "preemptions": 4, "identical": True},
    "chi_square": {"combined_p_value": 0.3, "contexts": []},
    "wall_s": 150.0,
}


@pytest.mark.parametrize(
    ("planted", "failing"),
    [
        ({"preemption": {"kv_blocks": 51, "preemptions": 4, "identical": False}}, "preemption"),
        ({"preemption": {"kv_blocks": 51, "preemptions": 0, "identical": True}}, "preemption"),
        ({"chi_square": {"combined_p_value": 2e-4}}, "chi_square"),
        ({"chi_square": {}}, "chi_square"),
    ],
)
def test_report_judges_the_load_part(tmp_path: Path, planted: dict[str, Any], failing: str) -> None:
    from tools.gpu.turbo_proof import report

    good = report(_parts(tmp_path, GOOD_LOAD))
    assert good["passed"] and all(good["checks"].values()) and good["parts_missing"] == []
    assert good["preemption"]["preemptions"] == 4 and good["parts"]["load_wall_s"] == 150.0
    bad = report(_parts(tmp_path, {**GOOD_LOAD, **planted}))
    assert not bad["passed"]
    assert [k for k, ok in bad["checks"].items() if not ok] == [failing]
    (tmp_path / "load.json").unlink()
    missing = report(tmp_path)
    assert not missing["passed"] and missing["parts_missing"] == ["load"]
    assert not missing["checks"]["preemption"] and not missing["checks"]["chi_square"]


# A planted context's p-value is 0, and Fisher's combination takes its log.
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_load_on_the_cpu_holds_draws_to_the_reference_and_a_planted_top_k_fails(
    models: tuple[Any, Any, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`load` with the reference standing in for vLLM's engines (as `dry` runs it).

    The stand-in has no scheduler: it never preempts, so the preemption check fails here
    by design; the KV cache it would get holds one whole item and two prompts, not two
    whole items. Its draws come from the reference's own distribution, so the
    chi-square passes; drawn without top_k, it must fail. (Temperature 1 instead of 0.8
    moves the tiny checkpoint's flat distribution too little for 500 draws to see.)
    """
    pytest.importorskip("vllm", reason="the proof builds vLLM SamplingParams")
    from tools.gpu import turbo_proof as proof
    from tools.gpu.proof_common import CHI_SQUARE_P_BOUND, KV_BLOCK, saver

    class NoTopKLLM(proof._ReferenceLLM):
        """Planted: a sampler that drops top_k (0 keeps every token)."""

        def _logprobs(self, rows: Any, along: list[int], p: Any) -> Any:
            every = SimpleNamespace(
                temperature=p.temperature,
                top_k=0,
                top_p=p.top_p,
                repetition_penalty=p.repetition_penalty,
            )
            return super()._logprobs(rows, along, every)

    steps = proof.STEPS  # what the GPU decodes; 8 here for time
    monkeypatch.setattr(proof, "STEPS", 8)
    _, _, directory = models
    out = proof.load(directory, saver(tmp_path / "load.json"), proof._ReferenceLLM, "cpu")
    assert json.loads((tmp_path / "load.json").read_text()) == out
    pre, chi = out["preemption"], out["chi_square"]
    assert pre["identical"] and pre["preemptions"] == 0
    rows = max(int(i["rows"].shape[0]) for i in proof.Setup(directory, "cpu").items)
    assert rows + steps <= pre["kv_blocks"] * KV_BLOCK < 2 * (rows + steps)
    assert pre["kv_blocks"] * KV_BLOCK >= 2 * rows
    assert chi["sampling"] == {
        "temperature": 0.8,
        "repetition_penalty": 1.2,
        "min_p": 0.0,
        "top_p": 0.95,
        "top_k": 1000,
    }
    assert len(chi["contexts"]) == 6 and chi["draws_per_context"] == 500
    assert chi["combined_p_value"] >= CHI_SQUARE_P_BOUND
    planted = proof.load(directory, saver(tmp_path / "planted.json"), NoTopKLLM, "cpu")
    assert planted["chi_square"]["combined_p_value"] < CHI_SQUARE_P_BOUND
