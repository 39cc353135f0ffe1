"""How far bf16 moves T3's CFG distribution, on the CPU, before a GPU run sets its bound.

    python tools/t3_bf16_estimate.py [DIR]

Our T3 from a full-size random multilingual checkpoint (written to DIR if missing), in
float32 and in bfloat16, teacher-forced along 48 random tokens for three random voices.
Per CFG weight: mean KL(float32 || bf16) per step, the KL a CFG weight forced to 0.5 or
to 0 causes (the planted bug's size), and greedy agreement. The output is kept in
`benchmarks/results/t3-bf16-cpu-estimate.log`; `tools/gpu/t3_vllm_proof.py` cites it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from chatterbox_serve.model.checkpoint import load_t3
from tools.gpu import t3_reference as ref
from tools.write_checkpoint import write_checkpoint


def _logits(
    model: Any, rows: tuple[torch.Tensor, torch.Tensor], tokens: list[int], dtype: torch.dtype
) -> torch.Tensor:
    fed = torch.tensor(tokens[:-1])
    speech = model.embed_speech(fed, torch.arange(len(fed)) + 1)
    embeds = torch.stack([torch.cat((r.to(dtype), speech)) for r in rows])
    n = embeds.shape[1]
    with torch.inference_mode():
        positions = torch.arange(n).expand(2, n)
        valid = torch.ones(2, n, dtype=torch.bool)
        hidden = model.tfmr(embeds, positions, model.tfmr.new_cache(2, n), valid)
        start = rows[0].shape[0] - 1
        out: torch.Tensor = model.speech_head(hidden[:, start : start + len(tokens)]).float()
        return out


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/t3-full")
    if not (directory / "t3_mtl23ls_v2.safetensors").exists():
        write_checkpoint(directory, multilingual=True, seed=0, with_s3gen=False)
    t3 = load_t3(directory, multilingual=True)
    gen = torch.Generator().manual_seed(1)
    items = []
    for _ in range(3):
        speaker = torch.randn(1, 256, generator=gen) * 0.1
        prompt = torch.randint(0, 6561, (1, 150), generator=gen)
        text = [255, *torch.randint(1, 700, (28,), generator=gen).tolist(), 0]
        with torch.inference_mode():
            cond = t3.conditioning(speaker, prompt, torch.tensor([0.5]))[0]
            rows = (t3.prefill_embeds(cond, text, False), t3.prefill_embeds(cond, text, True))
        items.append((rows, torch.randint(0, 6561, (48,), generator=gen).tolist()))
    full = [_logits(t3, r, t, torch.float32) for r, t in items]
    t3 = t3.to(torch.bfloat16)
    half = [_logits(t3, r, t, torch.bfloat16) for r, t in items]
    for lf, lb in zip(full, half, strict=True):
        for w in (0.0, 0.5, 1.0):
            f = torch.log_softmax(lf[0] + w * (lf[0] - lf[1]), -1)
            b = torch.log_softmax(lb[0] + w * (lb[0] - lb[1]), -1)
            at_half = torch.log_softmax(lf[0] + 0.5 * (lf[0] - lf[1]), -1)
            at_zero = torch.log_softmax(lf[0], -1)
            print(
                f"w={w} bf16 KL {ref.mean_kl(f, b):.2e}  weight->0.5 KL "
                f"{ref.mean_kl(f, at_half):.2e}  weight->0 KL {ref.mean_kl(f, at_zero):.2e}  "
                f"greedy agreement {ref.agreeing_steps(f, b.argmax(-1).tolist())}/48",
                flush=True,
            )


if __name__ == "__main__":
    main()
