"""The per-request values our vLLM T3 reads from its position ids, packed into one int32.

T3 needs two per-request values on every decode step that vLLM does not hand a model:

- where speech starts, because the k-th generated token is embedded with upstream's
  learned speech position `k + 1`;
- the request's CFG weight, because logits are `cond + w * (cond - uncond)`.

vLLM's M-RoPE interface is the one documented per-request hook that reaches decode
steps: `get_mrope_input_positions` runs once per request with its multimodal data and
returns the prompt's positions plus a constant `delta`, and every later token is fed at
position `context_len + delta`. vLLM 0.26's model runner keeps those positions and the
delta as **int32** (`v1/worker/gpu/mm/rope.py`), so everything must fit in 31 bits:

    packed = weight_code * SPAN + rope_index
    rope_index = sequence_index - speech_start + CENTER

`rope_index` is what RoPE sees. It is the true sequence index shifted by a constant
per request, and RoPE attention depends only on differences of positions, so attention
is upstream's. It also says where speech starts without storing the start: generated
tokens sit at `CENTER + k`, so their speech position is `rope_index - CENTER + 1`, and
prompt rows sit below `CENTER`. `weight_code` is constant per request, so `delta`
keeps it on every decode step, and after a preemption vLLM recomputes the same values.

Bounds: a prompt of at most CENTER rows and at most CENTER - 1 generated tokens, so
`max_model_len <= CENTER` is always safe; weights in [0, 26.2] at 1e-4 resolution.

This module imports no torch, so the packing is tested on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

SPAN = 8192  # rope indices are 0..SPAN-1 (13 bits)
CENTER = SPAN // 2  # the rope index of the first generated token
WEIGHT_SCALE = 10_000  # CFG weight resolution: 1e-4
MAX_WEIGHT_CODE = 2**18 - 1  # 18 + 13 bits: the largest packed value is 2**31 - 1
MAX_CFG_WEIGHT = MAX_WEIGHT_CODE / WEIGHT_SCALE
MAX_MODEL_LEN = CENTER


@dataclass(frozen=True)
class PackedPosition:
    """The two values one packed position id holds."""

    rope_index: int
    weight_code: int

    @property
    def cfg_weight(self) -> float:
        return self.weight_code / WEIGHT_SCALE

    @property
    def speech_position(self) -> int:
        """Upstream's speech position of a generated token; <= 0 inside the prompt."""
        return self.rope_index - CENTER + 1


def weight_code(cfg_weight: float) -> int:
    """The CFG weight as the integer the positions carry.

    Raises:
        ValueError: for a weight outside [0, MAX_CFG_WEIGHT]; the API bounds it to [0, 1].
    """
    if not 0.0 <= cfg_weight <= MAX_CFG_WEIGHT:
        raise ValueError(f"cfg_weight {cfg_weight} outside [0, {MAX_CFG_WEIGHT}]")
    return round(cfg_weight * WEIGHT_SCALE)


def pack(sequence_index: int, speech_start: int, code: int) -> int:
    if not 0 <= speech_start <= CENTER:
        raise ValueError(f"speech start {speech_start} outside [0, {CENTER}]")
    rope_index = sequence_index - speech_start + CENTER
    if not (0 <= sequence_index and 0 <= rope_index < SPAN):
        raise ValueError(
            f"sequence index {sequence_index} is {sequence_index - speech_start} tokens from "
            f"the speech start; at most {CENTER - 1} fit"
        )
    if not 0 <= code <= MAX_WEIGHT_CODE:
        raise ValueError(f"weight code {code} outside [0, {MAX_WEIGHT_CODE}]")
    return code * SPAN + rope_index


def unpack(position: int) -> PackedPosition:
    code, rope_index = divmod(position, SPAN)
    return PackedPosition(rope_index, code)


def prompt_positions(
    num_tokens: int, speech_start: int, cfg_weight: float
) -> tuple[list[int], int]:
    """Packed positions of a prompt of `num_tokens` tokens, and the decode delta.

    `speech_start` is the index of the first generated token (the prompt's length when
    the prompt is the conditioning, the text and the two start-of-speech tokens).
    """
    code = weight_code(cfg_weight)
    base = pack(0, speech_start, code)
    return [base + i for i in range(num_tokens)], base
