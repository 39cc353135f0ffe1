"""Proof on a GPU that Turbo's T3 on vLLM (`ChatterboxTurboT3`) makes the reference's tokens.

    python -m tools.gpu.turbo_proof exact  --checkpoint DIR --parts P   # float32, eager
    python -m tools.gpu.turbo_proof served --checkpoint DIR --parts P   # bf16, CUDA graphs
    python -m tools.gpu.turbo_proof report --parts P --out FILE    # the judged report
    python -m tools.gpu.turbo_proof dry                                 # CPU smoke, no vLLM engine

The reference is our `TurboT3` (float32, on the same GPU, token-identical to upstream
chatterbox-tts 0.1.7 on the CPU in CI), and its prompt rows are held against upstream's
own `T3.prepare_input_embeds`; its logits also against upstream's GPT-2
(`tools/gpu/turbo_reference.py`). One part per command (a lent GPU cuts each at 10
minutes); each writes `P/<part>.json`, `report` joins and judges.

- **exact** (vLLM float32, eager, FlexAttention, TF32 off): prompt rows ours vs upstream;
  greedy decoding with every log-probability, against the reference teacher-forced
  along vLLM's tokens; sampling at Turbo's defaults (0.8, top_k 1000, top_p 0.95,
  penalty 1.2) with vLLM's processed log-probabilities against the reference in vLLM's
  order, and how far vLLM's order is from upstream's (total variation per step);
  planted bugs, each of which must fail.
- **served** (`engine.engine_kwargs`: bf16, CUDA graphs): greedy agreement and mean KL
  per step against the float32 reference; and stops: 64 requests with the served
  `SamplingParams` must all end at 6562, speech token 2 made frequent by a logit bias.
- **dry**: the tiny checkpoint on the CPU, the reference standing in for vLLM's engine
  (`_ReferenceLLM`): every step of `exact` but the engine, and the report.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

STEPS = 64
TOP = 20
# float32 against float32, vLLM's fused GEMMs and FlexAttention against SDPA: the
# original's proof measured 2.3e-5 over 30 layers on the H200; the same bound.
TOLERANCE = 2e-3
# bf16 + CUDA graphs against float32, mean KL per step (the original's bound). Set
# before the GPU run: the full-size random Turbo T3 in bf16 against float32 on the CPU
# gave 4.1e-5 nats per step (two items, 48 greedy steps each, argmax equal at every step),
# so the bound sits ~50x above bf16's own effect.
KL_BOUND = 2e-3
BACKEND = "FLEX_ATTENTION"
SPEECH_TOKEN_TWO = 2
TEXTS = [
    "Hello there, this is a test of the vLLM model.",
    "I can't believe it [laugh] well [sigh] that was something.",
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Short one.",
    "Every morning the baker opens his shop [cough] before the town wakes up.",
    "She sells sea shells by the sea shore [chuckle] on sunny afternoons.",
]
PLANTED_BUGS = ("head_without_bias", "positions_shifted", "speech_rows_zeroed")


class Setup:
    """The reference T3 and upstream's, float32 on `device`, one checkpoint, six items."""

    def __init__(self, directory: Path, device: str = "cuda") -> None:
        import torch

        from chatterbox_serve.engines.vllm.engine import t3_shape
        from chatterbox_serve.engines.vllm.model_dir import build_model_dir
        from chatterbox_serve.model.checkpoint import load_builtin_voice
        from chatterbox_serve.model.turbo import checkpoint
        from chatterbox_serve.model.turbo.tokenizer import TurboTextTokenizer
        from chatterbox_serve.model.voice import builtin_voice_inputs
        from tools.gpu.turbo_reference import upstream_rows, upstream_turbo_t3

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.device = device
        self.t3 = checkpoint.load_t3(directory, device, torch.float32)
        # Upstream's package is optional on a GPU box; without it the rows go unchecked
        # here (CI holds the reference to upstream token for token).
        self.up: Any = None
        self.upstream_missing: str | None = None
        try:
            self.up = upstream_turbo_t3(self.t3, directory).to(device)
        except (ImportError, AssertionError) as exc:
            self.upstream_missing = f"{type(exc).__name__}: {exc}"
            print("upstream chatterbox-tts unavailable:", self.upstream_missing, flush=True)
        self.model_dir = build_model_dir(directory / checkpoint.T3_FILE, t3_shape(self.t3))
        config = self.t3.config
        self.vocab, self.start, self.stop = (
            config.speech_vocab_size,
            config.start_speech_token,
            config.stop_speech_token,
        )
        tokenizer = TurboTextTokenizer.load(directory)
        builtin = builtin_voice_inputs(load_builtin_voice(directory), "cpu")
        gen = torch.Generator().manual_seed(7)
        self.items: list[dict[str, Any]] = []
        for i, text in enumerate(TEXTS):
            if i % 2 == 0:
                speaker, prompt, voice = builtin.speaker_emb, builtin.prompt_tokens, "builtin"
            else:
                speaker = torch.randn(1, config.speaker_embed_size, generator=gen) * 0.1
                prompt = torch.randint(0, 6561, (1, config.speech_cond_prompt_len), generator=gen)
                voice = f"random-{i}"
            ids = tokenizer.encode(text)
            with torch.inference_mode():
                prefix = self.t3.conditioning(speaker.float().to(device), prompt.to(device))[0]
                rows = self.t3.prefill_embeds(prefix, ids, uncond=False)
            up = None if self.up is None else upstream_rows(self.up, speaker.float(), prompt, ids)
            self.items.append(
                {"text": text, "voice": voice, "text_tokens": len(ids), "rows": rows, "up": up}
            )

    def prompt(self, item: dict[str, Any], forced: list[int] | None = None) -> dict[str, Any]:
        """The served prompt (`engine.prompt_for`, CFG weight 0), optionally teacher-forced."""
        import uuid

        from chatterbox_serve.engines.vllm.engine import prompt_for

        prompt = prompt_for(item["rows"].float().cpu(), 0.0, self.start)
        prompt["prompt_token_ids"] = [*prompt["prompt_token_ids"], *(forced or [])]
        prompt["multi_modal_uuids"] = {"image": [uuid.uuid4().hex]}
        return prompt

    def logits(self, item: dict[str, Any], tokens: list[int]) -> Any:
        from tools.gpu.turbo_reference import reference_logits

        return reference_logits(self.t3, item["rows"], tokens)


def _llm(setup: Setup, **kwargs: Any) -> Any:
    from vllm import LLM

    base: dict[str, Any] = {
        "model": str(setup.model_dir),
        "skip_tokenizer_init": True,
        "max_model_len": 1024,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.2,
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "limit_mm_per_prompt": {"image": 1},
        "max_logprobs": setup.vocab,
    }
    return LLM(**{**base, **kwargs})


def _steps(logprobs: Any) -> list[dict[int, float]]:
    return [{t: lp.logprob for t, lp in step.items()} for step in logprobs]


def _greedy(llm: Any, setup: Setup) -> list[dict[str, Any]]:
    """Greedy decoding with every log-probability, against the reference's raw ones."""
    import torch
    from vllm import SamplingParams

    from tools.gpu.t3_reference import agreeing_steps, dense, max_logprob_diff, mean_kl

    params = SamplingParams(
        temperature=0.0, max_tokens=STEPS, logprobs=setup.vocab, ignore_eos=True, detokenize=False
    )
    outs = llm.generate([setup.prompt(i) for i in setup.items], params, use_tqdm=False)
    results = []
    for item, out in zip(setup.items, outs, strict=True):
        comp = out.outputs[0]
        tokens = list(comp.token_ids)
        steps = _steps(comp.logprobs)
        ref = torch.log_softmax(setup.logits(item, tokens), -1).cpu()
        diff, mismatches = max_logprob_diff(steps, ref)
        results.append(
            {
                "voice": item["voice"],
                "text_tokens": item["text_tokens"],
                "tokens": tokens,
                "max_abs_logprob_diff": diff,
                "support_mismatches": mismatches,
                "mean_kl": mean_kl(ref, dense(steps, setup.vocab)),
                "greedy_agreeing_steps": agreeing_steps(ref, tokens),
                "greedy_agreeing_steps_ties_within_tolerance": agreeing_steps(
                    ref, tokens, tie=TOLERANCE
                ),
            }
        )
    return results


def _summary(per_item: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "max_abs_logprob_diff": max(i["max_abs_logprob_diff"] for i in per_item),
        "max_mean_kl": max(i["mean_kl"] for i in per_item),
        "min_greedy_agreeing_steps": min(i["greedy_agreeing_steps"] for i in per_item),
        "median_greedy_agreeing_steps": statistics.median(
            i["greedy_agreeing_steps"] for i in per_item
        ),
        "min_greedy_agreeing_steps_ties_within_tolerance": min(
            i["greedy_agreeing_steps_ties_within_tolerance"] for i in per_item
        ),
    }


def _sampled(llm: Any, setup: Setup) -> dict[str, Any]:
    """Turbo's defaults, seeded; processed log-probs against the reference in vLLM's order."""
    from vllm import SamplingParams

    from chatterbox_serve.engines.vllm.engine import sampling_params_for
    from chatterbox_serve.model.turbo.reference import TurboSampling
    from tools.gpu.t3_reference import max_logprob_diff
    from tools.gpu.turbo_reference import Chain, total_variation, upstream_order, vllm_order

    params = []
    for i, item in enumerate(setup.items):
        values = TurboSampling().item(item["rows"], (), seed=100 + i)
        # The served values (`sampling_params_for`), decoding a fixed length: not with
        # `min_tokens`, which would mask the stop token that the reference keeps.
        s = sampling_params_for(values, STEPS, setup.stop, forced=False)
        params.append(
            SamplingParams(
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                min_p=s.min_p,
                repetition_penalty=s.repetition_penalty,
                seed=s.seed,
                max_tokens=STEPS,
                logprobs=TOP,
                ignore_eos=True,
                detokenize=False,
            )
        )
    outs = llm.generate([setup.prompt(i) for i in setup.items], params, use_tqdm=False)
    per_item = []
    for item, out in zip(setup.items, outs, strict=True):
        comp = out.outputs[0]
        tokens = list(comp.token_ids)
        logits = setup.logits(item, tokens)
        ours = vllm_order(logits, tokens, Chain(), setup.start).cpu()
        theirs = upstream_order(logits, tokens, Chain(), setup.start).cpu()
        diff, mismatches = max_logprob_diff(_steps(comp.logprobs), ours)
        tv = total_variation(ours, theirs)
        per_item.append(
            {
                "voice": item["voice"],
                "tokens": len(tokens),
                "distinct_tokens": len(set(tokens)),
                "max_abs_logprob_diff_vllm_order": diff,
                "support_mismatches_vllm_order": mismatches,
                "upstream_order_tv_mean": float(tv.mean()),
                "upstream_order_tv_max": float(tv.max()),
            }
        )
    return {
        "sampling": Chain().__dict__,
        "max_abs_logprob_diff": max(i["max_abs_logprob_diff_vllm_order"] for i in per_item),
        "support_mismatches": sum(i["support_mismatches_vllm_order"] for i in per_item),
        "upstream_order_tv_mean": statistics.mean(i["upstream_order_tv_mean"] for i in per_item),
        "upstream_order_tv_max": max(i["upstream_order_tv_max"] for i in per_item),
        "items": per_item,
    }


def _rows_check(setup: Setup) -> dict[str, Any]:
    """Our prompt rows against upstream's, and our logits against upstream's GPT-2."""
    from tools.gpu.turbo_reference import upstream_logits

    if setup.up is None:
        return {"upstream_missing": setup.upstream_missing}
    tokens = [17, 2, 6000, 4299, 17, 6560, 0, 3, 3, 812, 45, 1000]
    rows = max(float((i["rows"] - i["up"]).abs().max()) for i in setup.items)
    logits = max(
        float((setup.logits(i, tokens) - upstream_logits(setup.up, i["up"], tokens)).abs().max())
        for i in setup.items
    )
    return {"upstream_prompt_rows": rows, "upstream_backbone_logits": logits}


def exact(
    checkpoint: Path, save: Any, llm_factory: Any = None, device: str = "cuda"
) -> dict[str, Any]:
    """The float32 part; `save(result)` after each step, so a cut run keeps what it did."""
    import torch

    began = time.perf_counter()
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "engine": f"float32 (both sides), TF32 off; vLLM eager, {BACKEND}",
    }
    setup = Setup(checkpoint, device)
    out.update(_rows_check(setup))
    save(out)
    if llm_factory is None:
        import vllm

        out["vllm"] = vllm.__version__
        llm = _llm(
            setup,
            dtype="float32",
            enforce_eager=True,
            attention_backend=BACKEND,
            logprobs_mode="processed_logprobs",
        )
    else:
        llm = llm_factory(setup)
    greedy = _greedy(llm, setup)
    out["greedy"] = {**_summary(greedy), "items": greedy}
    save(out)
    out["sampling"] = _sampled(llm, setup)
    save(out)
    out["planted"] = {}
    for bug in PLANTED_BUGS:
        llm.apply_model(functools.partial(plant, bug=bug))
        out["planted"][bug] = _summary(_greedy(llm, setup))
        save(out)
    llm.apply_model(functools.partial(plant, bug=None))
    out["wall_s"] = round(time.perf_counter() - began, 1)
    save(out)
    return out


def served(checkpoint: Path, save: Any) -> dict[str, Any]:
    """The served configuration (bf16, CUDA graphs); `save(result)` after each step."""
    import torch
    import vllm

    from chatterbox_serve.config import load_settings
    from chatterbox_serve.engines.vllm.engine import engine_kwargs

    began = time.perf_counter()
    setup = Setup(checkpoint)
    kwargs = {
        **engine_kwargs(load_settings(os.environ, None), setup.model_dir),
        "gpu_memory_utilization": 0.3,
    }
    if kwargs["enforce_eager"]:
        raise SystemExit("the served configuration compiles: set VLLM_COMPILE=true")
    out: dict[str, Any] = {
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "engine": {k: v for k, v in kwargs.items() if k != "model"},
    }
    llm = _llm(setup, **kwargs)
    greedy = _greedy(llm, setup)
    out["greedy"] = {**_summary(greedy), "items": greedy}
    save(out)
    out["stops"] = _stops(llm, setup)
    out["wall_s"] = round(time.perf_counter() - began, 1)
    save(out)
    return out


def _stops(llm: Any, setup: Setup) -> dict[str, Any]:
    """64 requests with the served `SamplingParams`: each must end at 6562 and nowhere else."""
    from chatterbox_serve.engines.vllm.engine import sampling_params_for
    from chatterbox_serve.model.turbo.reference import TurboSampling

    prompts, params = [], []
    for k in range(64):
        item = setup.items[k % len(setup.items)]
        values = TurboSampling().item(item["rows"], (), seed=1000 + k)
        p = sampling_params_for(values, 1000, setup.stop, forced=False)
        # Random weights give each token ~1/6600 a step: biased, token 2 comes ~10% of
        # steps (less once penalised) and the stop token ~3%, so both are seen and
        # every item stops long before its 1000 tokens.
        p.logit_bias = {SPEECH_TOKEN_TWO: 5.2, setup.stop: 1.8}
        prompts.append(setup.prompt(item))
        params.append(p)
    outs = llm.generate(prompts, params, use_tqdm=False)
    finish: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    lengths: list[int] = []
    with_two = 0
    for out in outs:
        comp = out.outputs[0]
        toks = list(comp.token_ids)
        finish[str(comp.finish_reason)] += 1
        reasons[str(comp.stop_reason)] += 1
        lengths.append(len(toks))
        with_two += int(SPEECH_TOKEN_TWO in toks[:-1])
    print("stops:", dict(finish), dict(reasons), with_two, flush=True)
    return {
        "requests": 64,
        "finish_reasons": dict(finish),
        "stop_reasons": dict(reasons),
        "items_with_token_2_before_the_end": with_two,
        "length_min_median_max": [min(lengths), statistics.median(lengths), max(lengths)],
        "all_at_stop_token": finish == Counter({"stop": 64})
        and reasons == Counter({str(setup.stop): 64}),
    }


# ---- planted bugs ------------------------------------------------------------------


class _HeadWithoutBias:
    """Over `ChatterboxTurboT3`: logits without the speech head's bias."""

    def compute_logits(self, hidden_states: Any) -> Any:
        import torch.nn.functional as F

        return F.linear(hidden_states.float(), self.speech_head.weight.float())  # type: ignore[attr-defined]


class _PositionsShifted:
    """Over GPT-2's `wpe`: every row gets the next position's embedding."""

    def forward(self, ids: Any) -> Any:
        return super().forward((ids + 1).clamp(max=self.num_embeddings - 1))  # type: ignore[misc, attr-defined]


class _SpeechRowsZeroed:
    """Over GPT-2's `wte`: generated tokens embed as zeros (only `wpe` is left)."""

    def forward(self, ids: Any) -> Any:
        import torch

        return torch.zeros_like(super().forward(ids))  # type: ignore[misc]


def _targets(model: Any) -> dict[str, Any]:
    return {
        "head_without_bias": (_HeadWithoutBias, model),
        "positions_shifted": (_PositionsShifted, model.transformer.wpe),
        "speech_rows_zeroed": (_SpeechRowsZeroed, model.transformer.wte),
    }


def plant(model: Any, bug: str | None) -> None:
    """Switch `bug` on in a loaded `ChatterboxTurboT3` (None: every bug off).

    The swap acts on the eager forward pass (`enforce_eager=True`). From a vLLM `LLM`:
    `llm.apply_model(functools.partial(plant, bug=...))`.
    """
    for _, module in _targets(model).values():
        base = type(module).__dict__.get("_unplanted")
        if base is not None:
            module.__class__ = base
    if bug is None:
        return
    mixin, module = _targets(model)[bug]
    base = type(module)
    module.__class__ = type(f"Planted{base.__name__}", (mixin, base), {"_unplanted": base})


# ---- dry run: the reference in the engine's place ---------------------------------------


class _ReferenceLLM:
    """Stands in for vLLM's `LLM` in `dry`: the reference T3 decodes, vLLM's order samples.

    Returns what `LLM.generate` returns, as far as this tool reads it; `apply_model`
    plants bugs into a `ChatterboxTurboT3`-shaped view of the reference.
    """

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.bug: str | None = None

    def apply_model(self, fn: Any) -> None:
        self.bug = fn.keywords["bug"]

    def generate(self, prompts: list[dict[str, Any]], params: Any, use_tqdm: bool) -> list[Any]:
        import torch

        from tools.gpu.turbo_reference import Chain, vllm_order

        if not isinstance(params, list):
            params = [params] * len(prompts)
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            rows = prompt["multi_modal_data"]["image"]["t3_prefix"]
            item = {"rows": rows}
            tokens: list[int] = []
            steps = []
            gen = torch.Generator().manual_seed(p.seed or 0)
            for _ in range(p.max_tokens or 1):
                logits = self.setup.logits(item, [*tokens, 0])[-1:].clone()
                if self.bug == "head_without_bias":
                    logits -= self.setup.t3.speech_head.bias.float()
                if p.temperature == 0:
                    lp = torch.log_softmax(logits, -1)[0]
                    token = int(lp.argmax())
                else:
                    chain = Chain(p.temperature, p.top_k, p.top_p, p.repetition_penalty)
                    every = vllm_order(
                        self.setup.logits(item, [*tokens, 0]), [*tokens, 0], chain, self.setup.start
                    )
                    lp = every[-1].detach()
                    token = int(torch.multinomial(lp.exp(), 1, generator=gen))
                top = lp.topk(min(p.logprobs or 1, lp.numel()))
                steps.append(
                    {
                        int(t): SimpleNamespace(logprob=float(v))
                        for t, v in zip(top.indices, top.values, strict=True)
                    }
                    | {token: SimpleNamespace(logprob=float(lp[token]))}
                )
                tokens.append(token)
                if token in (p.stop_token_ids or []):
                    break
            outs.append(
                SimpleNamespace(
                    outputs=[
                        SimpleNamespace(
                            token_ids=tokens,
                            logprobs=steps,
                            finish_reason="length",
                            stop_reason=None,
                        )
                    ]
                )
            )
        return outs


def dry(save: Any) -> dict[str, Any]:
    """`exact` on the CPU with the tiny checkpoint and the reference as the engine."""
    from tools.write_checkpoint import write_turbo_checkpoint

    global STEPS
    STEPS = 8
    directory = write_turbo_checkpoint(
        Path(tempfile.mkdtemp(prefix="turbo-dry-")), tiny=True, with_s3gen=False
    )
    return exact(directory, save, llm_factory=_ReferenceLLM, device="cpu")


# ---- the report --------------------------------------------------------------------------


def report(parts: Path) -> dict[str, Any]:
    def part(name: str) -> dict[str, Any]:
        path = parts / f"{name}.json"
        loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return loaded

    ex, sv = part("exact"), part("served")
    planted = {
        bug: {
            "max_mean_kl": v["max_mean_kl"],
            "max_abs_logprob_diff": v["max_abs_logprob_diff"],
            "over_tolerance": v["max_abs_logprob_diff"] > TOLERANCE,
        }
        for bug, v in ex.get("planted", {}).items()
    }
    sampling = ex.get("sampling", {})
    greedy = ex.get("greedy", {})
    bf16 = sv.get("greedy", {})
    stops = sv.get("stops", {})
    checks: dict[str, bool] = {}
    if not ex.get("upstream_missing"):
        checks["upstream_prompt_rows"] = ex.get("upstream_prompt_rows", 1.0) <= TOLERANCE
        checks["upstream_backbone_logits"] = ex.get("upstream_backbone_logits", 1.0) <= TOLERANCE
    checks |= {
        "float32_greedy": greedy.get("max_abs_logprob_diff", 1.0) <= TOLERANCE
        and greedy.get("min_greedy_agreeing_steps_ties_within_tolerance", 0) == STEPS,
        "sampling_vllm_order": sampling.get("max_abs_logprob_diff", 1.0) <= TOLERANCE
        and sampling.get("support_mismatches", 1) == 0,
        "stop_reasons": bool(stops.get("all_at_stop_token"))
        and stops.get("items_with_token_2_before_the_end", 0) > 0,
        "bf16_kl": bf16.get("max_mean_kl", 1.0) <= KL_BOUND,
        "planted": bool(planted) and all(p["over_tolerance"] for p in planted.values()),
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "parts_missing": [n for n in ("exact", "served") if not part(n)],
        "upstream_missing": ex.get("upstream_missing"),
        "vllm": ex.get("vllm") or sv.get("vllm"),
        "torch": ex.get("torch") or sv.get("torch"),
        "device": ex.get("device") or sv.get("device"),
        "checkpoint": "full-size random Turbo (tools/write_checkpoint.py --turbo, seed 0)",
        "reference": "our TurboT3 in float32 on the same GPU (token-identical to upstream "
        "chatterbox-tts 0.1.7 on the CPU in CI); prompt rows against upstream's own "
        "T3.prepare_input_embeds, logits against upstream's GPT-2",
        "tolerance": TOLERANCE,
        "upstream_prompt_rows": ex.get("upstream_prompt_rows"),
        "upstream_backbone_logits": ex.get("upstream_backbone_logits"),
        "float32_greedy": {k: v for k, v in greedy.items() if k != "items"},
        "sampling": {
            "what": "vLLM's processed log-probabilities at Turbo's defaults against the "
            "reference in vLLM's order (penalty first, over the start token and the "
            "tokens so far); upstream applies the penalty last and counts the start "
            "token only at step 0: total variation between the two orders per step",
            **{k: v for k, v in sampling.items() if k != "items"},
        },
        "stop_reasons": stops,
        "bf16_graphs": {
            "engine": sv.get("engine"),
            "greedy_agreeing_steps_min": bf16.get("min_greedy_agreeing_steps"),
            "greedy_agreeing_steps_median": bf16.get("median_greedy_agreeing_steps"),
            "steps": STEPS,
            "mean_kl_per_step_max_item": bf16.get("max_mean_kl"),
            "kl_bound": KL_BOUND,
        },
        "planted": planted,
        "parts": {"exact_wall_s": ex.get("wall_s"), "served_wall_s": sv.get("wall_s")},
    }


def _brief(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _brief(v) for k, v in value.items() if not isinstance(v, list)}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=["exact", "served", "report", "dry"])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/ckpt-turbo"))
    parser.add_argument("--parts", type=Path, default=Path("/tmp/turbo-proof"))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/turbo-equivalence-h200.json")
    )
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model's closure
    args.parts.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report(args.parts), indent=2) + "\n")
        print(json.dumps(json.loads(args.out.read_text())["checks"], indent=1))
        return
    path = args.parts / f"{args.part}.json"

    def save(result: dict[str, Any]) -> None:
        path.write_text(json.dumps(result, indent=2))
        print("saved", json.dumps(_brief(result))[:1500], flush=True)

    if args.part == "exact":
        exact(args.checkpoint, save)
    elif args.part == "served":
        served(args.checkpoint, save)
    else:
        dry(save)


if __name__ == "__main__":
    main()
