"""The served proof's own vLLM requests through vLLM 0.26's real input processing (CPU).

The chi-square contexts are teacher-forced prompts (prefix rows, then speech tokens) and
the stop probe adds a logit bias to the served `SamplingParams`: both must reach the
engine core as the proof assumes, or the GPU run would measure something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM 0.26 not installed")

from chatterbox_serve.engines.vllm import positions  # noqa: E402
from chatterbox_serve.engines.vllm.engine import sampling_params_for  # noqa: E402
from chatterbox_serve.engines.vllm.t3_vllm import ChatterboxT3ForCFG  # noqa: E402
from chatterbox_serve.model.t3.generation import GenerationItem  # noqa: E402
from tests.unit.test_vllm026_real import _process, input_processor  # noqa: E402
from tools.gpu import t3_vllm_proof as proof  # noqa: E402

__all__ = ["input_processor"]  # the fixture, shared with test_vllm026_real


def test_forced_history_and_stop_probe_reach_the_engine_core(
    input_processor: Any, multilingual_dir: Path
) -> None:
    setup = proof.Setup(multilingual_dir, device="cpu")
    item = setup.items[2]
    rows = int(item["rows_c"].shape[0])
    history = [11, 2, 4000]
    values = GenerationItem(
        item["rows_c"], (), temperature=0.8, top_p=1.0, min_p=0.05, repetition_penalty=1.2, seed=9
    )
    params = sampling_params_for(values, 100, setup.stop, forced=False)
    params.logit_bias = {proof.SPEECH_TOKEN_TWO: 6.0, setup.stop: 4.9}
    request = _process(input_processor, setup.prompt(item, forced=history), params)
    assert request.prompt_token_ids == [setup.start] * rows + history
    assert request.sampling_params.stop_token_ids == [setup.stop]
    assert request.sampling_params.logit_bias == {2: 6.0, setup.stop: 4.9}
    model = object.__new__(ChatterboxT3ForCFG)  # the hook reads no model state
    packed, _ = model.get_mrope_input_positions(request.prompt_token_ids, request.mm_features)
    speech = [positions.unpack(int(p)).rope_index - positions.CENTER + 1 for p in packed[0]]
    # Forced history tokens sit where generated ones would: speech positions 1, 2, 3.
    assert speech[rows:] == [1, 2, 3] and all(s <= 0 for s in speech[:rows])
