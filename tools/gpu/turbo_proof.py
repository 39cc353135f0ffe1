"""Proof on a GPU that Turbo's T3 on vLLM (`ChatterboxTurboT3`) makes the reference's tokens.

    python -m tools.gpu.turbo_proof exact  --checkpoint DIR --parts P   # float32, eager
    python -m tools.gpu.turbo_proof served --checkpoint DIR --parts P   # bf16, CUDA graphs
    python -m tools.gpu.turbo_proof load   --checkpoint DIR --parts P   # preemption, chi-square
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
- **load** (the served configuration checked as the original's is; `common.preemption`,
  `common.chi_square`): the sampled batch of `exact` on a float32 engine with room to
  spare, then again on one whose KV cache holds two items' prompts and a block more, so
  vLLM preempts and recomputes: the tokens must be identical and vLLM's count of
  preemptions above 0; then on the served engine (bf16, CUDA graphs) 500 seeded draws of
  the next token at each item's context (its first 24 sampled tokens teacher-forced)
  against the float32 reference in vLLM's order: Fisher's combined p-value at least the
  original's bound. Three engines in one call: about 3 minutes on an H200 for the
  full-size checkpoint (estimated from the original's parts: a float32 engine starts in
  ~30 s, a second in ~10 s, the served one with its compile in ~50 s; not yet measured).
- **dry**: the tiny checkpoint on the CPU, the reference standing in for vLLM's engine
  (`_ReferenceLLM`): every step of `exact` and `load` but the engine (the stand-in has no
  scheduler, so it never preempts), and the report over both.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tools.gpu import proof_common as common
from tools.gpu.proof_common import SPEECH_TOKEN_TWO

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

        from chatterbox_serve.engines.vllm.model_dir import build_model_dir
        from chatterbox_serve.model.checkpoint import load_builtin_voice
        from chatterbox_serve.model.turbo import checkpoint
        from chatterbox_serve.model.turbo.tokenizer import TurboTextTokenizer
        from chatterbox_serve.model.voice import builtin_voice_inputs
        from tools.gpu.turbo_reference import upstream_rows, upstream_turbo_t3

        common.float32_only()
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
        self.model_dir = build_model_dir(directory / checkpoint.T3_FILE, self.t3.config)
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
        return common.served_prompt(item["rows"], 0.0, self.start, forced)

    def logits(self, item: dict[str, Any], tokens: list[int]) -> Any:
        from tools.gpu.turbo_reference import reference_logits

        return reference_logits(self.t3, item["rows"], tokens)


def _greedy(llm: Any, setup: Setup) -> list[dict[str, Any]]:
    """Greedy decoding with every log-probability, against the reference's raw ones."""
    import torch

    return common.greedy(
        llm,
        setup,
        lambda item, tokens: torch.log_softmax(setup.logits(item, tokens), -1),
        ("voice", "text_tokens"),
        STEPS,
        TOLERANCE,
    )


def _served_values(setup: Setup, item: dict[str, Any], seed: int | None) -> Any:
    """The served `SamplingParams` of one item at Turbo's defaults (`sampling_params_for`)."""
    from chatterbox_serve.engines.vllm.engine import sampling_params_for
    from chatterbox_serve.model.turbo.reference import TurboSampling

    values = TurboSampling().item(item["rows"], (), seed=seed)
    return sampling_params_for(values, STEPS, setup.stop, forced=False)


def _sampled_params(setup: Setup) -> list[Any]:
    """The served values of each item, seeded, decoding a fixed length: not with
    `min_tokens`, which would mask the stop token that the reference keeps."""
    params = []
    for i, item in enumerate(setup.items):
        s = _served_values(setup, item, 100 + i)
        params.append(common.fixed_length(s, STEPS, s.seed, TOP))
    return params


def _sampled(llm: Any, setup: Setup) -> dict[str, Any]:
    """Turbo's defaults, seeded; processed log-probs against the reference in vLLM's order."""
    from tools.gpu.t3_reference import max_logprob_diff
    from tools.gpu.turbo_reference import Chain, total_variation, upstream_order, vllm_order

    outs = llm.generate(
        [setup.prompt(i) for i in setup.items], _sampled_params(setup), use_tqdm=False
    )
    per_item = []
    for item, out in zip(setup.items, outs, strict=True):
        comp = out.outputs[0]
        tokens = list(comp.token_ids)
        logits = setup.logits(item, tokens)
        ours = vllm_order(logits, tokens, Chain(), setup.start).cpu()
        theirs = upstream_order(logits, tokens, Chain(), setup.start).cpu()
        diff, mismatches = max_logprob_diff(common.logprob_steps(comp.logprobs), ours)
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


def _versions(device: str, stand_in: bool) -> dict[str, Any]:
    """torch and the device, and vLLM's version unless the reference stands in for it."""
    import torch

    if not stand_in:
        return common.versions()
    return {"torch": torch.__version__, "device": device}


def exact(
    checkpoint: Path, save: common.Save, llm_factory: Any = None, device: str = "cuda"
) -> dict[str, Any]:
    """The float32 part; `save(result)` after each step, so a cut run keeps what it did."""
    began = time.perf_counter()
    out = {**_versions(device, llm_factory is not None), "engine": common.FLOAT32_ENGINE}
    setup = Setup(checkpoint, device)
    out.update(_rows_check(setup))
    save(out)
    if llm_factory is None:
        llm = common.float32_llm(setup, logprobs_mode="processed_logprobs")
    else:
        llm = llm_factory(setup)
    greedy = _greedy(llm, setup)
    out["greedy"] = {**common.summary(greedy), "items": greedy}
    save(out)
    out["sampling"] = _sampled(llm, setup)
    save(out)
    common.planted(llm, setup, PLANTED_BUGS, plant, _greedy, out, save)
    out["wall_s"] = common.elapsed(began)
    save(out)
    return out


def load(
    checkpoint: Path,
    save: common.Save,
    llm_factory: Any = None,
    device: str = "cuda",
    draws: int = common.CHI_SQUARE_DRAWS,
) -> dict[str, Any]:
    """Preemption (float32) and the seeded-sampling chi-square (served); `save` after each.

    `llm_factory(setup, **engine_args)` stands in for all three engines (`dry`).
    """
    began = time.perf_counter()
    out: dict[str, Any] = _versions(device, llm_factory is not None)
    setup = Setup(checkpoint, device)
    float32 = llm_factory or common.float32_llm
    params = _sampled_params(setup)
    llm = float32(setup)
    expected = common.decode(llm, setup, params)
    del llm
    out["preemption"] = common.preemption(setup, params, expected, _kv_blocks(setup), float32)
    save(out)
    if llm_factory is None:
        llm, out["engine"] = common.served_llm(setup)
    else:
        llm, out["engine"] = llm_factory(setup), "the reference (dry run)"
    out["chi_square"] = _chi_square(llm, setup, expected, draws)
    out["wall_s"] = common.elapsed(began)
    save(out)
    return out


def _kv_blocks(setup: Setup) -> int:
    """Two items' prompts at once and a block to spare: their decodes do not fit.

    Turbo's prompts are long (375 speech-prompt rows), so the original's one item and 8
    blocks more would hold only one at a time and never preempt. vLLM admits a request
    only when its whole sequence so far fits (`scheduler_reserve_full_isl`); two run, and
    when both need a new block one is preempted and later recomputed.
    """
    return 2 * -(-common.prompt_rows(setup) // common.KV_BLOCK) + 1


def _chi_square(llm: Any, setup: Setup, sampled: list[list[int]], draws: int) -> dict[str, Any]:
    """Each item's next token after its first sampled tokens, against the reference.

    The served values (Turbo's defaults, min_p off) on both sides: vLLM draws with them,
    the reference applies them in vLLM's order (`turbo_reference.vllm_order`).
    """
    from tools.gpu.turbo_reference import Chain, vllm_order

    values = _served_values(setup, setup.items[0], None)
    chain = Chain(values.temperature, values.top_k, values.top_p, values.repetition_penalty)

    def reference(item: dict[str, Any], tokens: list[int]) -> Any:
        return vllm_order(setup.logits(item, tokens), tokens, chain, setup.start)

    return common.chi_square(
        llm,
        setup,
        reference,
        values,
        sampled,
        ("voice",),
        draws,
        min(common.CHI_SQUARE_HISTORY, STEPS),
    )


def served(checkpoint: Path, save: common.Save) -> dict[str, Any]:
    """The served configuration (bf16, CUDA graphs); `save(result)` after each step."""
    began = time.perf_counter()
    _, out, _ = common.served(Setup(checkpoint), save, _greedy, _stops)
    out["wall_s"] = common.elapsed(began)
    save(out)
    return out


def _stops(llm: Any, setup: Setup) -> dict[str, Any]:
    """64 requests with the served `SamplingParams`: each must end at 6562 and nowhere else."""
    from chatterbox_serve.model.turbo.reference import TurboSampling

    def values(k: int, item: dict[str, Any]) -> Any:
        return TurboSampling().item(item["rows"], (), seed=1000 + k)

    # Random weights give each token ~1/6600 a step: biased, token 2 comes ~10% of
    # steps (less once penalised) and the stop token ~3%, so both are seen and
    # every item stops long before its 1000 tokens.
    return common.stops(llm, setup, values, {SPEECH_TOKEN_TWO: 5.2, setup.stop: 1.8})


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
    plants bugs into a `ChatterboxTurboT3`-shaped view of the reference. Engine arguments
    are taken and ignored: there is no KV cache and no scheduler, so nothing is ever
    preempted (`get_metrics` has no count) and the engine's dtype is the reference's.
    """

    def __init__(self, setup: Setup, **engine_args: Any) -> None:
        self.setup = setup
        self.bug: str | None = None

    def apply_model(self, fn: Any) -> None:
        self.bug = fn.keywords["bug"]

    def get_metrics(self) -> list[Any]:
        return []

    def generate(self, prompts: list[dict[str, Any]], params: Any, use_tqdm: bool) -> list[Any]:
        import torch

        if not isinstance(params, list):
            params = [params] * len(prompts)
        # Requests that share a prompt (the chi-square's draws) share its distributions.
        memo: dict[tuple[Any, ...], Any] = {}
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            rows = prompt["multi_modal_data"]["image"]["t3_prefix"]
            forced = list(prompt["prompt_token_ids"][rows.shape[0] :])
            tokens: list[int] = []
            steps = []
            gen = torch.Generator().manual_seed(p.seed or 0)
            for _ in range(p.max_tokens or 1):
                chain = (p.temperature, p.top_k, p.top_p, p.repetition_penalty)
                key = (id(rows), *chain, *forced, *tokens)
                if key not in memo:
                    memo[key] = self._logprobs(rows, [*forced, *tokens, 0], p)
                lp = memo[key]
                if p.temperature == 0:
                    token = int(lp.argmax())
                else:
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

    def _logprobs(self, rows: Any, along: list[int], p: Any) -> Any:
        """The last step's log-probabilities along `along`: raw when greedy, else processed."""
        import torch

        from tools.gpu.turbo_reference import Chain, vllm_order

        logits = self.setup.logits({"rows": rows}, along)
        if p.temperature == 0:
            last = logits[-1]
            if self.bug == "head_without_bias":
                last = last - self.setup.t3.speech_head.bias.float()
            return torch.log_softmax(last, -1).detach()
        chain = Chain(p.temperature, p.top_k, p.top_p, p.repetition_penalty)
        return vllm_order(logits, along, chain, self.setup.start)[-1].detach()


def dry(parts: Path, save: common.Save) -> dict[str, Any]:
    """`exact` and `load` on the CPU with the tiny checkpoint and the reference as the
    engine, into `parts/dry/`; then the report over them."""
    from tools.write_checkpoint import write_turbo_checkpoint

    global STEPS
    STEPS = 8
    directory = write_turbo_checkpoint(
        Path(tempfile.mkdtemp(prefix="turbo-dry-")), tiny=True, with_s3gen=False
    )
    where = parts / "dry"
    where.mkdir(parents=True, exist_ok=True)
    for name, run in (("exact", exact), ("load", load)):
        save_part = common.saver(where / f"{name}.json")
        run(directory, save_part, llm_factory=_ReferenceLLM, device="cpu")
    result = report(where)
    save(result)
    return result


# ---- the report --------------------------------------------------------------------------


def report(parts: Path) -> dict[str, Any]:
    part = common.parts_reader(parts)
    ex, sv, ld = part("exact"), part("served"), part("load")
    planted = common.planted_report(ex, TOLERANCE)
    sampling = ex.get("sampling", {})
    greedy = ex.get("greedy", {})
    bf16 = sv.get("greedy", {})
    stops = sv.get("stops", {})
    preemption, chi = ld.get("preemption", {}), ld.get("chi_square", {})
    checks: dict[str, bool] = {}
    if not ex.get("upstream_missing"):
        checks["upstream_prompt_rows"] = ex.get("upstream_prompt_rows", 1.0) <= TOLERANCE
        checks["upstream_backbone_logits"] = ex.get("upstream_backbone_logits", 1.0) <= TOLERANCE
    checks |= {
        "float32_greedy": common.float32_greedy_passes(greedy, TOLERANCE, STEPS),
        "sampling_vllm_order": sampling.get("max_abs_logprob_diff", 1.0) <= TOLERANCE
        and sampling.get("support_mismatches", 1) == 0,
        "stop_reasons": common.stops_pass(stops),
        "bf16_kl": bf16.get("max_mean_kl", 1.0) <= KL_BOUND,
        "planted": bool(planted) and all(p["over_tolerance"] for p in planted.values()),
        "preemption": common.preemption_passes(preemption),
        "chi_square": common.chi_square_passes(chi),
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "parts_missing": [n for n in ("exact", "served", "load") if not part(n)],
        "upstream_missing": ex.get("upstream_missing"),
        **common.versions_of(ex, sv, ld),
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
        "bf16_graphs": common.bf16_figures(sv, STEPS, KL_BOUND),
        "planted": planted,
        "preemption": preemption,
        "chi_square": {
            "what": "the served engine's seeded draws of the next token at fixed contexts "
            "against the float32 reference in vLLM's order: Fisher's combined p-value",
            "engine": ld.get("engine"),
            "p_bound": common.CHI_SQUARE_P_BOUND,
            **chi,
        },
        "parts": {
            "exact_wall_s": ex.get("wall_s"),
            "served_wall_s": sv.get("wall_s"),
            "load_wall_s": ld.get("wall_s"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=["exact", "served", "load", "report", "dry"])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/ckpt-turbo"))
    parser.add_argument("--parts", type=Path, default=Path("/tmp/turbo-proof"))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/turbo-equivalence-h200.json")
    )
    common.main(
        parser,
        report,
        {
            "exact": lambda args, save: exact(args.checkpoint, save),
            "served": lambda args, save: served(args.checkpoint, save),
            "load": lambda args, save: load(args.checkpoint, save),
            "dry": lambda args, save: dry(args.parts, save),
        },
    )


if __name__ == "__main__":
    main()
