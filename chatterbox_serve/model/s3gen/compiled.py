"""The CFM estimator under `torch.compile`, optionally replayed as CUDA graphs per shape bucket.

Profiled on the H200 (benchmarks/results/s3gen-h200-profile.log), a bf16 estimator step
over 64 items spends most of its time outside the matrix products and the attention:
layer norms, GELU, mask multiplies, transposes made contiguous and the float32/bfloat16
casts autocast inserts around every linear layer. Inductor fuses those into a few
kernels.

Modes (`S3GenBatchPolicy.compile`):

- `"default"`: one dynamic-shape compilation (batch and frames symbolic), so no
  recompilation per batch shape.
- `"reduce-overhead"`: the same, replayed as CUDA graphs, one recorded per input shape.
  To bound how many graphs exist, rows are padded up to a bucket (1, 2, 4, 8, then
  multiples of 8) and frames up to the next of a geometric series of ratio
  `frame_bucket` (1.25: at most 25 % more frames, a dozen buckets for 3 to 30 s).
- `"regional"`: only the estimator's repeated blocks are compiled (its 56 transformer
  blocks and 14 causal resnet blocks), each through `torch.compile` of its own call.
  Instances of one class share one compiled graph (their weights are graph inputs), so
  Inductor compiles two small graphs instead of the whole estimator: the whole-estimator
  compilation ran past 123 s on the H200 host. Measured on the CPU (aot_eager): 70
  modules, 4 graphs, results equal to eager exactly. The compiled calls are installed
  on the modules only while a solve runs, so other runners over the same estimator
  (and the sequential path) stay eager.

- `"graphs"`: no compilation at all: the eager estimator step (the guided pair, autocast
  and guidance) recorded as a plain CUDA graph per (rows, frames) bucket, as in
  "reduce-overhead", and replayed. It removes the thousands of kernel launches of each
  step that bound S3Gen at small batches (a streamed item's first render, the stage's
  partial batches), at the cost of one warm-up and one capture (two eager steps) the
  first time a bucket is met, instead of minutes of compilation. A bucket that cannot
  be captured runs eagerly from then on, with a warning.

Compiled modes can keep their compilation across restarts (`S3GenBatchPolicy.
compile_cache_dir`, `CompileCache`): after a call that compiled something, torch's
compile artifacts (Inductor's kernels and graphs, AOTAutograd's) are saved to one file
there (`torch.compiler.save_cache_artifacts`), and a later process loads them before
its first call, so its compilation hits the caches instead of generating and building
kernels again; only Dynamo's tracing is repeated.

Only on CUDA: on other devices the eager module runs (compiling there buys little and
costs minutes). Imported lazily by `batch`: this module needs torch and chatterbox-vllm.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from chatterbox_serve.model.s3gen.flow import GuidedVelocity, Precision

logger = logging.getLogger(__name__)

CompileMode = Literal["off", "default", "reduce-overhead", "regional", "graphs"]

# Frame buckets start here; shorter batches share the first bucket.
MIN_BUCKET_FRAMES = 64


def frame_bucket(frames: int, ratio: float) -> int:
    """The smallest bucket holding `frames`: 64 x ratio^k, rounded up to a multiple of 16."""
    if ratio <= 1.0:
        return frames
    size = float(MIN_BUCKET_FRAMES)
    while _round16(size) < frames:
        size *= ratio
    return _round16(size)


def row_bucket(rows: int) -> int:
    """Rows padded for a CUDA graph: 1, 2, 4, 8, then the next multiple of 8."""
    if rows <= 8:
        return 1 << max(0, math.ceil(math.log2(rows)))
    return 8 * math.ceil(rows / 8)


def pad_rows(tensors: tuple[torch.Tensor, ...], rows: int) -> tuple[torch.Tensor, ...]:
    """Zero rows appended along dim 0 up to `rows`.

    A padded row has an all-zero mask, so the estimator gives zeros there, and real rows
    never see it: every layer works within a row (tests/unit/test_s3gen_batch.py).
    """
    return tuple(F.pad(a, (0, 0) * (a.dim() - 1) + (0, rows - a.shape[0])) for a in tensors)


def _round16(size: float) -> int:
    return 16 * math.ceil(size / 16)


class CompileCache:
    """torch's compile artifacts for one compiled velocity, in one file that outlives the process.

    `load` before the first compiled call; `save` after a call that compiled. Entries are
    keyed inside torch by graph, versions and device, so a file from another torch or GPU
    only misses, and a miss costs what no cache costs.
    """

    def __init__(self, directory: str | Path, name: str) -> None:
        self.path = Path(directory) / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".bin")
        self.loaded = False

    def load(self) -> bool:
        """Hand the file's artifacts to torch's caches; False if there is none."""
        if not self.path.is_file():
            return False
        torch.compiler.load_cache_artifacts(self.path.read_bytes())
        self.loaded = True
        logger.info("S3Gen compile cache loaded from %s", self.path)
        return True

    def save(self) -> bool:
        """Write what torch compiled in this process so far; False if it has nothing."""
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return False
        data, _info = saved
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_bytes(data)
        partial.replace(self.path)  # whole or absent: another replica may be reading it
        logger.info("S3Gen compile cache saved to %s (%d bytes)", self.path, len(data))
        return True


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _saving(call: Any, cache: CompileCache) -> Any:
    """`call`, followed by `cache.save()` whenever it compiled a new graph."""

    def saving(*inputs: torch.Tensor) -> torch.Tensor:
        before = _graphs_compiled()
        out: torch.Tensor = call(*inputs)
        if _graphs_compiled() != before:
            try:
                cache.save()
            except Exception as exc:  # the next start compiles again; this one goes on
                logger.warning("S3Gen compile cache %s not saved (%r)", cache.path, exc)
        return out

    return saving


class CompiledVelocity:
    """A compiled `GuidedVelocity`; called like it (a `flow.Velocity`).

    Build once per estimator and keep it: the compiled code and the CUDA graphs live in
    this object. Not thread-safe (CUDA graph replays share static buffers). With `cache`,
    its artifacts are loaded now and saved after each call that compiled a graph.
    """

    def __init__(
        self,
        estimator: torch.nn.Module,
        cfg_rate: float,
        precision: Precision,
        mode: CompileMode,
        frame_ratio: float = 1.25,
        backend: str = "inductor",
        cache: CompileCache | None = None,
    ) -> None:
        if mode == "off":
            raise ValueError("mode 'off' has nothing to compile")
        if precision == "tf32":
            raise ValueError("compile fp32, bf16 or fp16; tf32 switches global flags per step")
        self.mode = mode
        self.frame_ratio = frame_ratio
        self.module = GuidedVelocity(estimator, cfg_rate, precision)
        self.cache = cache
        if cache is not None:
            try:
                cache.load()
            except Exception as exc:  # a damaged file must not stop a replica: compile afresh
                logger.warning("S3Gen compile cache %s not loaded (%r)", cache.path, exc)
        self._regions: list[tuple[torch.nn.Module, Any]] = []
        if mode == "regional":
            self._regions = [
                (m, torch.compile(m._call_impl, backend=backend, dynamic=True))
                for m in repeated_blocks(estimator)
            ]
            self._compiled: Any = self.module
        else:
            self._compiled = torch.compile(self.module, mode=mode, dynamic=True, backend=backend)
        if cache is not None:
            self._compiled = _saving(self._compiled, cache)

    @property
    def cuda_graphs(self) -> bool:
        return self.mode == "reduce-overhead"

    def pad_frames(self, frames: int) -> int:
        """The frame count `flow_mels` pads a batch to (unchanged without CUDA graphs)."""
        return frame_bucket(frames, self.frame_ratio) if self.cuda_graphs else frames

    def __call__(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        if self._regions:
            with _installed(self._regions):
                regional: torch.Tensor = self._compiled(x, mask, mu, t, spks, cond)
            return regional
        if not self.cuda_graphs:
            out: torch.Tensor = self._compiled(x, mask, mu, t, spks, cond)
            return out
        rows = x.shape[0]
        x, mask, mu, spks, cond = pad_rows((x, mask, mu, spks, cond), row_bucket(rows))
        torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
        graph_out: torch.Tensor = self._compiled(x, mask, mu, t, spks, cond)
        # A replay overwrites its output buffer; the caller keeps this one across steps.
        return graph_out[:rows].clone()


class GraphedVelocity:
    """`GuidedVelocity` replayed from CUDA graphs, one per (rows, frames) bucket.

    Called like a `flow.Velocity`. Inputs are copied into the bucket's static buffers
    (padded rows are zero, with an all-zero mask, as in "reduce-overhead"); the output
    is cloned, since the next replay overwrites it. Not thread-safe.
    """

    cuda_graphs = True
    mode = "graphs"

    def __init__(
        self, estimator: torch.nn.Module, cfg_rate: float, precision: Precision, ratio: float
    ) -> None:
        self.module = GuidedVelocity(estimator, cfg_rate, precision)
        self.frame_ratio = ratio
        self._graphs: dict[tuple[Any, ...], Any] = {}
        self._pool: Any = None

    def pad_frames(self, frames: int) -> int:
        return frame_bucket(frames, self.frame_ratio)

    def __call__(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        rows = x.shape[0]
        padded = (*pad_rows((x, mask, mu, spks, cond), row_bucket(rows)), t.reshape(()))
        key = tuple((a.shape, a.dtype) for a in padded)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(padded)
        if entry is False:
            eager: torch.Tensor = self.module(x, mask, mu, t, spks, cond)
            return eager
        graph, static_in, static_out = entry
        for buffer, value in zip(static_in, padded, strict=True):
            buffer.copy_(value)
        graph.replay()
        out: torch.Tensor = static_out[:rows].clone()
        return out

    @property
    def graphs(self) -> int:
        return sum(1 for entry in self._graphs.values() if entry is not False)

    def _capture(self, padded: tuple[torch.Tensor, ...]) -> Any:
        x, mask, mu, spks, cond, t = (a.clone() for a in padded)
        static_in = (x, mask, mu, spks, cond, t)
        try:
            # Warm up on a side stream (lazy initialisation, cuBLAS workspaces) before
            # recording, as CUDA graph capture requires.
            side = torch.cuda.Stream(device=x.device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                self.module(x, mask, mu, t, spks, cond)
            torch.cuda.current_stream(x.device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = self.module(x, mask, mu, t, spks, cond)
        except Exception as exc:  # an op that cannot be recorded: stay eager for this shape
            logger.warning("S3Gen CUDA graph for %s not captured (%r); eager", x.shape, exc)
            return False
        return graph, static_in, static_out


def block_levels(estimator: torch.nn.Module) -> list[tuple[torch.nn.Module, list[torch.nn.Module]]]:
    """Each level's resnet block and transformer blocks, down, mid then up.

    Found by structure (`down_blocks`, `mid_blocks`, `up_blocks` of (resnet, transformer
    blocks, ...)), as `flow.estimate` walks them.
    """
    levels = [
        (level[0], list(level[1]))
        for group in ("down_blocks", "mid_blocks", "up_blocks")
        for level in getattr(estimator, group, [])
    ]
    if not levels:
        raise ValueError("no down/mid/up blocks: not a CFM estimator")
    return levels


def repeated_blocks(estimator: torch.nn.Module) -> list[torch.nn.Module]:
    """The estimator's transformer blocks and resnet blocks, the regions compiled one by one."""
    return [m for resnet, blocks in block_levels(estimator) for m in (resnet, *blocks)]


@contextlib.contextmanager
def _installed(regions: list[tuple[torch.nn.Module, Any]]) -> Iterator[None]:
    """Route each module's calls through its compiled call for the duration of one step."""
    saved = [module._compiled_call_impl for module, _ in regions]
    for module, compiled in regions:
        module._compiled_call_impl = compiled
    try:
        yield
    finally:
        for (module, _), previous in zip(regions, saved, strict=True):
            module._compiled_call_impl = previous


# One compiled velocity per estimator and setting, shared by every runner over it:
# compiling the estimator takes tens of seconds, and the engine may build runners
# per batch size. Entries keep their estimator alive, so an id is never reused.
_built: dict[tuple[int, str, str, float, bool], CompiledVelocity] = {}


def build_velocity(
    s3gen: Any,
    precision: Precision,
    mode: CompileMode,
    frame_ratio: float,
    *,
    fp8: bool = False,
    cache_dir: str | None = None,
) -> CompiledVelocity | GraphedVelocity | None:
    """The compiled velocity the policy asks for, or None for the eager path (off, not CUDA).

    `fp8`: the runner calls it with the float8 linear layers installed (`fp8`), which
    a compiled graph bakes in, so those get their own compiled velocity. `cache_dir`:
    where compile artifacts are kept across restarts (`CompileCache`), if anywhere.
    """
    if mode == "off":
        return None
    decoder = s3gen.flow.decoder
    device = next(decoder.estimator.parameters()).device
    if device.type != "cuda":
        logger.info("S3Gen compile %r skipped: the estimator is on %s, not CUDA", mode, device)
        return None
    key = (id(decoder.estimator), precision, mode, frame_ratio, fp8)
    if mode == "graphs":
        # Graphs hold static buffers: one set per runner, not shared across threads.
        return GraphedVelocity(
            decoder.estimator, decoder.inference_cfg_rate, precision, frame_ratio
        )
    if key not in _built:
        cache = None
        if cache_dir is not None:
            sm = "sm{}{}".format(*torch.cuda.get_device_capability(device))
            name = f"s3gen-{mode}-{precision}{'-fp8' if fp8 else ''}-torch{torch.__version__}-{sm}"
            cache = CompileCache(cache_dir, name)
        _built[key] = CompiledVelocity(
            decoder.estimator,
            decoder.inference_cfg_rate,
            precision,
            mode,
            frame_ratio,
            cache=cache,
        )
    return _built[key]
