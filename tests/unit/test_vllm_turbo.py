"""Turbo's T3 on vLLM 0.26's real code, on the CPU, from the tiny Turbo checkpoint.

- vLLM's input processing of the engine's Turbo prompt: prefix rows and ids, plain
  positions (no M-RoPE), and the stop ids the engine core gets: only 6562, whatever
  `GPT2Config` defaults to (50256) and whatever speech token comes first;
- the model directory written from the loaded reference T3's `config`;
- `ChatterboxTurboT3` built by vLLM's layers, loaded from upstream's file, against the
  reference `TurboT3` over a whole sequence: prompt rows then teacher-forced speech
  tokens, every step's logits. vLLM's attention kernel needs a GPU's forward context,
  so a causal SDPA stands in for it (third-party code); everything of ours is real;
- vLLM's scheduler over the GPU proof's preemption batch (`turbo_proof load`): its KV
  cache makes vLLM preempt, with a stand-in for the model runner.
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

vllm = pytest.importorskip("vllm", reason="vLLM 0.26 not installed")

from chatterbox_serve.engines.vllm import plugin  # noqa: E402
from chatterbox_serve.engines.vllm.engine import (  # noqa: E402
    prompt_for,
    sampling_params_for,
)
from chatterbox_serve.engines.vllm.model_dir import (  # noqa: E402
    TURBO_ARCHITECTURE,
    build_model_dir,
)
from chatterbox_serve.model.turbo import checkpoint  # noqa: E402
from chatterbox_serve.model.turbo.config import GPT2Config  # noqa: E402
from chatterbox_serve.model.turbo.reference import TurboSampling  # noqa: E402
from tests.unit.vllm_cpu import cpu_platform, gelu_new_kernel, model_parallel  # noqa: E402

START, STOP = 6561, 6562
# float32 on both sides, the same math in a different order (fused QKV, F.linear).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def turbo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.write_checkpoint import write_turbo_checkpoint

    return write_turbo_checkpoint(
        tmp_path_factory.mktemp("turbo"), tiny=True, seed=3, with_s3gen=False
    )


@pytest.fixture(scope="module")
def reference(turbo_dir: Path) -> Any:
    return checkpoint.load_t3(turbo_dir)


@pytest.fixture(scope="module")
def engine_config(turbo_dir: Path, reference: Any) -> Iterator[Any]:
    from vllm.engine.arg_utils import EngineArgs

    with cpu_platform():
        plugin.register()
        model_dir = build_model_dir(turbo_dir / checkpoint.T3_FILE, reference.config)
        args = EngineArgs(
            model=str(model_dir),
            skip_tokenizer_init=True,
            dtype="float32",
            enforce_eager=True,
            max_model_len=2048,
            max_num_seqs=8,
            enable_prefix_caching=False,
            mm_processor_cache_gb=0,
            limit_mm_per_prompt={"image": 1},
            load_format="dummy",
        )
        yield args.create_engine_config()


def _rows(reference: Any, text_ids: list[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    speaker = torch.randn(1, reference.config.speaker_embed_size, generator=gen)
    prompt = torch.randint(0, 6561, (1, 40), generator=gen)
    with torch.inference_mode():
        prefix = reference.conditioning(speaker, prompt)[0]
        return reference.prefill_embeds(prefix, text_ids, uncond=False)


def _process(config: Any, prompt: dict[str, Any], params: Any) -> Any:
    from vllm.v1.engine.input_processor import InputProcessor

    processor = InputProcessor(config)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            processor.process_inputs, uuid.uuid4().hex, prompt, params, ("generate",)
        )
        return future.result(timeout=60)


def test_model_dir_from_the_turbo_checkpoint(turbo_dir: Path, reference: Any) -> None:
    t3_config = reference.config
    assert t3_config.backbone == GPT2Config(
        hidden_size=64, num_layers=2, num_heads=4, max_positions=2048
    )
    assert (t3_config.speech_vocab_size, t3_config.start_speech_token) == (6563, START)
    model_dir = build_model_dir(turbo_dir / checkpoint.T3_FILE, t3_config)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == [TURBO_ARCHITECTURE]
    assert (config["model_type"], config["vocab_size"]) == ("gpt2", 6563)
    assert (config["bos_token_id"], config["eos_token_id"]) == (START, STOP)
    assert (model_dir / "model.safetensors").resolve() == (turbo_dir / checkpoint.T3_FILE)


def test_vllm_reads_turbo_as_plain_gpt2_positions(engine_config: Any) -> None:
    model = engine_config.model_config
    assert model.architectures == [TURBO_ARCHITECTURE]
    assert not model.uses_mrope  # vLLM feeds positions 0..N-1: GPT-2's wpe indices
    assert model.hf_config.n_positions == 2048 and model.get_vocab_size() == 6563


def test_the_turbo_prompt_passes_input_processing_and_stops_only_at_6562(
    engine_config: Any, reference: Any
) -> None:
    from vllm.v1.core.sched.utils import check_stop
    from vllm.v1.request import Request

    rows = _rows(reference, [5, 9, 31, 7])
    assert rows.shape == (1 + 40 + 4 + 1, 64)
    item = TurboSampling().item(rows[:41], (5, 9, 31, 7), seed=4)
    params = sampling_params_for(item, 50, STOP, forced=False)
    request = _process(engine_config, prompt_for(rows, 0.0, START), params)
    assert request.prompt_token_ids == [START] * rows.shape[0]
    (feature,) = request.mm_features
    assert (feature.mm_position.offset, feature.mm_position.length) == (0, rows.shape[0])
    assert torch.equal(feature.data["t3_prefix"].data, rows)
    sampling = request.sampling_params
    # Turbo's chain reaches vLLM whole: 0.8, top_k 1000, top_p 0.95, penalty 1.2.
    chain = (sampling.temperature, sampling.top_k, sampling.top_p, sampling.repetition_penalty)
    assert chain == (0.8, 1000, 0.95, 1.2)
    assert sampling.stop_token_ids == [STOP]
    assert sampling.eos_token_id in (None, STOP)
    core = Request.from_engine_core_request(request, block_hasher=None)
    stopped = []
    for token in (5, 2, START, 7, 2, STOP):
        core.append_output_token_ids(token)
        stopped.append(check_stop(core, 2048))
    assert stopped == [False] * 5 + [True]
    assert core.stop_reason == STOP


class _CausalAttention(nn.Module):
    """Stands in for vLLM's `Attention` (its kernel needs a GPU forward context)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, d = q.shape
        q, k, v = (t.view(n, self.heads, d // self.heads).transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.transpose(0, 1).reshape(n, d)


@pytest.fixture(scope="module")
def vllm_model(engine_config: Any, turbo_dir: Path) -> Any:
    """The model as vLLM builds and loads it (once: vLLM refuses a layer name twice)."""
    from safetensors.torch import load_file
    from vllm.model_executor.model_loader.utils import process_weights_after_loading

    from chatterbox_serve.engines.vllm.turbo_vllm import ChatterboxTurboT3

    gelu_new_kernel()
    with cpu_platform(), model_parallel(engine_config):
        model = ChatterboxTurboT3(vllm_config=engine_config)
        loaded = model.load_weights(load_file(str(turbo_dir / checkpoint.T3_FILE)).items())
        # What vLLM's loader does next (on the CPU: binds each linear layer's GEMM).
        process_weights_after_loading(model, engine_config.model_config, torch.device("cpu"))
    assert loaded == {name for name, _ in model.named_parameters()}
    for block in model.transformer.h:
        block.attn.attn = _CausalAttention(engine_config.model_config.hf_config.n_head)
    return model.eval()


def _logits_gap(model: Any, engine_config: Any, reference: Any) -> float:
    """Largest |vLLM - reference| logit over a prompt and 12 teacher-forced speech tokens."""
    rows = _rows(reference, [11, 3, 250, 17, 90], seed=1)
    tokens = torch.tensor([17, 2, 6000, 4299, 17, 6560, 0, 3, 3, 812, 45, 1000])
    ids = torch.cat((torch.full((rows.shape[0],), START), tokens))
    positions = torch.arange(ids.numel())
    with torch.inference_mode(), cpu_platform(), model_parallel(engine_config):
        mm = model.embed_multimodal(t3_prefix=[rows])
        embeds = model.embed_input_ids(ids, mm, is_multimodal=positions < rows.shape[0])
        hidden = model(None, positions, None, embeds)
        ours = model.compute_logits(hidden[rows.shape[0] - 1 :])
        cache = reference.tfmr.new_cache(1, ids.numel())
        full = torch.cat((rows, reference.embed_speech(tokens, positions)))[None]
        valid = torch.ones(1, ids.numel(), dtype=torch.bool)
        out = reference.tfmr(full, positions[None], cache, valid)
        theirs = reference.speech_head(out[0, rows.shape[0] - 1 :]).float()
    assert ours.shape == theirs.shape == (tokens.numel() + 1, 6563)
    return float((ours - theirs).abs().max())


def test_turbo_class_forward_matches_the_reference_t3(
    vllm_model: Any, engine_config: Any, reference: Any
) -> None:
    # 2.4e-7 measured on the CPU.
    assert _logits_gap(vllm_model, engine_config, reference) < TOLERANCE


@pytest.mark.parametrize("bug", ["head_without_bias", "positions_shifted", "speech_rows_zeroed"])
def test_the_gpu_proofs_planted_bugs_move_the_logits(
    vllm_model: Any, engine_config: Any, reference: Any, bug: str
) -> None:
    from tools.gpu.turbo_proof import PLANTED_BUGS, plant

    assert bug in PLANTED_BUGS
    plant(vllm_model, bug)
    try:
        assert _logits_gap(vllm_model, engine_config, reference) > 100 * TOLERANCE
    finally:
        plant(vllm_model, None)
    assert _logits_gap(vllm_model, engine_config, reference) < TOLERANCE


def test_the_plugin_entry_point_registers_turbo_too() -> None:
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    assert TURBO_ARCHITECTURE in vllm.ModelRegistry.get_supported_archs()


def _preemptions(setup: Any, params: list[Any], kv_blocks: int) -> list[int]:
    """vLLM's scheduler over the GPU proof's requests with `kv_blocks` KV blocks of 16:
    each request's preemptions, every request decoded to its length.

    A stand-in for the model runner (third-party) samples token 7 for each request whose
    prompt is computed; the scheduler, its KV-cache manager and the requests (through
    vLLM's input processing) are vLLM's own.
    """
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

    from tools.gpu.proof_common import KV_BLOCK, prompt_rows

    with cpu_platform():
        plugin.register()
        args = EngineArgs(
            model=str(setup.model_dir),
            skip_tokenizer_init=True,
            dtype="float32",
            enforce_eager=True,
            max_model_len=prompt_rows(setup) + max(p.max_tokens for p in params),
            enable_prefix_caching=False,
            mm_processor_cache_gb=0,
            limit_mm_per_prompt={"image": 1},
            max_logprobs=setup.vocab,
            num_gpu_blocks_override=kv_blocks,
            block_size=KV_BLOCK,
            load_format="dummy",
        )
        config = args.create_engine_config()
        config.cache_config.num_gpu_blocks = kv_blocks  # what the engine core sets
        spec = FullAttentionSpec(
            block_size=KV_BLOCK, num_kv_heads=1, head_size=1, dtype=torch.float32
        )
        cache = KVCacheConfig(
            num_blocks=kv_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec(["attn"], spec)],
        )
        scheduler = Scheduler(config, cache, StructuredOutputManager(config), KV_BLOCK)
        requests = []
        for item, p in zip(setup.items, params, strict=True):
            core = _process(config, setup.prompt(item), p)
            requests.append(Request.from_engine_core_request(core, block_hasher=None))
            scheduler.add_request(requests[-1])
        for _ in range(10_000):
            if not scheduler.has_requests():
                break
            out = scheduler.schedule()
            ids = list(out.num_scheduled_tokens)
            sampled = []
            for rid in ids:
                r = scheduler.requests[rid]
                computed = r.num_computed_tokens + out.num_scheduled_tokens[rid] >= r.num_tokens
                sampled.append([7] if computed else [])
            index = {rid: i for i, rid in enumerate(ids)}
            scheduler.update_from_output(out, ModelRunnerOutput(ids, index, sampled))
    assert [len(r.output_token_ids) for r in requests] == [p.max_tokens for p in params]
    return [r.num_preemptions for r in requests]


def test_the_gpu_proofs_kv_cache_makes_vllm_preempt_turbos_requests(turbo_dir: Path) -> None:
    """`turbo_proof load`: vLLM's scheduler preempts the sampled batch on its KV cache.

    Turbo's prompts are long (375 speech-prompt rows): the original proof's count, the
    longest item and 8 blocks more, holds one item at a time and never preempts.
    """
    from tools.gpu import turbo_proof as proof
    from tools.gpu.proof_common import KV_BLOCK, prompt_rows

    setup = proof.Setup(turbo_dir, device="cpu")
    params = proof._sampled_params(setup)
    assert {p.max_tokens for p in params} == {proof.STEPS} == {64}
    preempted = _preemptions(setup, params, proof._kv_blocks(setup))
    # With a margin (5 measured): the GPU's scheduling (its token budget, async
    # scheduling) must not bring the count to 0.
    assert sum(preempted) >= 3, preempted
    longest = prompt_rows(setup) + proof.STEPS
    assert sum(_preemptions(setup, params, -(-longest // KV_BLOCK) + 8)) == 0
