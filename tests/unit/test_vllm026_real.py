"""Our T3 plugin against vLLM 0.26's real code, on the CPU.

vLLM's input processing (the renderer, the multimodal parser, our processor) is plain
Python, so the exact path a request takes before it reaches the GPU runs here. Both
bugs the H200 found first live on that path or at its edge:

- the renderer iterated our prefix item through `__getitem__` forever (the first
  `generate()` hung, with no error);
- vLLM 0.26's model runner keeps M-RoPE positions and their delta as int32, and our
  first packing overflowed it (the engine core died on the first request).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vLLM 0.26 not installed")

from chatterbox_serve.engines.vllm import plugin, positions  # noqa: E402
from chatterbox_serve.engines.vllm.engine import prompt_for, sampling_params_for  # noqa: E402
from chatterbox_serve.engines.vllm.model_dir import build_model_dir  # noqa: E402
from chatterbox_serve.model.t3.config import T3Config  # noqa: E402
from tests.unit.vllm_cpu import cpu_platform  # noqa: E402

CONFIG = T3Config()
START = CONFIG.start_speech_token
STOP = CONFIG.stop_speech_token


@pytest.fixture(scope="module")
def input_processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.input_processor import InputProcessor

    with cpu_platform():
        plugin.register()
        weights = tmp_path_factory.mktemp("weights") / "t3.safetensors"
        weights.write_bytes(b"")
        args = EngineArgs(
            model=str(build_model_dir(weights, CONFIG)),
            skip_tokenizer_init=True,
            dtype="float32",
            enforce_eager=True,
            max_model_len=positions.MAX_MODEL_LEN,
            max_num_seqs=8,
            enable_prefix_caching=False,
            mm_processor_cache_gb=0,
            limit_mm_per_prompt={"image": 1},
            load_format="dummy",
        )
        yield InputProcessor(args.create_engine_config())


def _process(processor: Any, prompt: dict[str, Any], params: Any = None) -> Any:
    from vllm import SamplingParams

    if params is None:
        params = SamplingParams(max_tokens=10, stop_token_ids=[STOP], detokenize=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            processor.process_inputs, uuid.uuid4().hex, prompt, params, ("generate",)
        )
        # The hang this guards against never returned; a healthy call takes milliseconds.
        return future.result(timeout=60)


def test_the_engines_prompt_passes_vllms_input_processing_promptly(input_processor: Any) -> None:
    rows = 180
    prefix = torch.randn(rows, 2 * CONFIG.hidden_size)
    request = _process(input_processor, prompt_for(prefix, 0.37, START))
    assert request.prompt_token_ids == [START] * rows
    (feature,) = request.mm_features
    assert feature.mm_position.offset == 0 and feature.mm_position.length == rows
    data = feature.data
    assert torch.equal(data["t3_prefix"].data, prefix)
    assert float(data["t3_cfg_weight"].data.reshape(-1)[0]) == pytest.approx(0.37)


def test_only_the_stop_of_speech_token_ends_a_request(input_processor: Any) -> None:
    from vllm.v1.core.sched.utils import check_stop
    from vllm.v1.request import Request

    from chatterbox_serve.model.t3.generation import GenerationItem

    prefix = torch.randn(40, 2 * CONFIG.hidden_size)
    item = GenerationItem(prefix=prefix, text_tokens=(255, 7, 0), seed=3)
    params = sampling_params_for(item, 50, STOP, forced=False)
    request = _process(input_processor, prompt_for(prefix, 0.5, START), params)
    # What the engine core gets, after vLLM merged in the model's generation config.
    assert request.sampling_params.stop_token_ids == [STOP]
    assert request.sampling_params.eos_token_id in (None, STOP)
    # vLLM's own scheduler stop check, token by token: speech token 2 (Llama's default
    # eos) is ordinary speech; the item ends at 6562 with that as its stop reason.
    core = Request.from_engine_core_request(request, block_hasher=None)
    stopped = []
    for token in (5, 2, 7, 2, STOP):
        core.append_output_token_ids(token)
        stopped.append(check_stop(core, positions.MAX_MODEL_LEN))
    assert stopped == [False, False, False, False, True]
    assert core.stop_reason == STOP
    # A forced length (benchmarks) stops at nothing but its budget.
    forced = _process(
        input_processor,
        prompt_for(prefix, 0.5, START),
        sampling_params_for(item, 50, STOP, forced=True),
    )
    assert forced.sampling_params.stop_token_ids == []
    assert forced.sampling_params.ignore_eos and forced.sampling_params.min_tokens == 50


def test_vllm_refuses_a_prompt_whose_ids_do_not_match_the_prefix(input_processor: Any) -> None:
    prompt = prompt_for(torch.randn(10, 2 * CONFIG.hidden_size), 0.5, START)
    prompt["prompt_token_ids"] = [START] * 9
    with pytest.raises(ValueError, match="start-of-speech"):
        _process(input_processor, prompt)
    prompt = prompt_for(torch.randn(10, CONFIG.hidden_size), 0.5, START)  # one branch only
    with pytest.raises(ValueError, match="t3_prefix must be"):
        _process(input_processor, prompt)


def test_model_positions_fit_vllms_int32_rope_state(input_processor: Any) -> None:
    from vllm.v1.worker.gpu.mm import rope

    from chatterbox_serve.engines.vllm.t3_vllm import ChatterboxT3ForCFG

    # vLLM 0.26 stores the prompt positions and the decode delta as int32.
    source = inspect.getsource(rope.RopeState.__init__)
    assert "self.prefill_delta = UvaBackedTensor(max_num_reqs, dtype=torch.int32)" in source
    assert "dtype=torch.int32" in source.split("self.prefill_positions")[1].split("self.")[0]
    rows = positions.MAX_MODEL_LEN - 1  # the longest prompt max_model_len allows
    request = _process(
        input_processor,
        prompt_for(torch.randn(rows, 2 * CONFIG.hidden_size), positions.MAX_CFG_WEIGHT, START),
    )
    model = object.__new__(ChatterboxT3ForCFG)  # the hook reads no model state
    values, delta = model.get_mrope_input_positions(request.prompt_token_ids, request.mm_features)
    assert values.shape == (3, rows)
    state = np.zeros(2, dtype=np.int32)
    state[0] = delta  # raised OverflowError with the first packing
    state[1] = int(values.max())
    last = positions.unpack(rows + positions.CENTER - 2 + delta)  # the last generated token
    assert last.speech_position == positions.CENTER - 1
    assert last.cfg_weight == pytest.approx(positions.MAX_CFG_WEIGHT)
    assert rows + positions.CENTER - 2 + delta < 2**31


def test_the_plugin_is_an_installed_entry_point() -> None:
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    assert "ChatterboxT3ForCFG" in vllm.ModelRegistry.get_supported_archs()


def test_hf_config_is_what_vllm_reads(tmp_path: Path) -> None:
    from vllm.transformers_utils.config import get_config

    weights = tmp_path / "t3.safetensors"
    weights.write_bytes(b"")
    config = get_config(str(build_model_dir(weights, CONFIG)), trust_remote_code=False)
    assert config.hidden_size == 2 * CONFIG.hidden_size
    assert config.architectures == ["ChatterboxT3ForCFG"]
