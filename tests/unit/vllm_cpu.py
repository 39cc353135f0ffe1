"""vLLM 0.26's own code on a machine without a GPU: its CPU platform, and its layers built.

vLLM picks its platform from the build; the CUDA wheel on a machine without a GPU finds
none, so `cpu_platform` names the CPU platform (configuration and plain-PyTorch layers
only). `model_parallel` sets up what building a model needs: the current config and a
one-process model-parallel group (gloo). The wheel's compiled kernels (`vllm._C`) are
absent on the CPU; `gelu_new_kernel` stands in for the one GPT-2's activation binds at
construction (vLLM's own `NewGELU.forward_native` formula).
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import torch


@contextlib.contextmanager
def cpu_platform() -> Iterator[Any]:
    """vLLM's `current_platform` is the CPU platform inside the block."""
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    previous = vllm.platforms._current_platform
    cpu = CpuPlatform()
    vllm.platforms._current_platform = cpu
    # Modules imported earlier hold the platform they saw under `current_platform`.
    rebound = [
        m
        for m in list(sys.modules.values())
        if getattr(m, "__name__", "").startswith("vllm")
        and getattr(m, "current_platform", None) is previous
    ]
    for module in rebound:
        module.current_platform = cpu  # type: ignore[attr-defined]
    try:
        yield cpu
    finally:
        vllm.platforms._current_platform = previous
        for module in rebound:
            module.current_platform = previous  # type: ignore[attr-defined]


_kernels: list[Any] = []


def gelu_new_kernel() -> None:
    """Define `torch.ops._C.gelu_new` (out, x) on the CPU if the wheel's kernel is absent."""
    if _kernels or hasattr(torch.ops._C, "gelu_new"):
        return
    library = torch.library.Library("_C", "FRAGMENT")
    library.define("gelu_new(Tensor(a!) out, Tensor input) -> ()")

    def gelu_new(out: torch.Tensor, x: torch.Tensor) -> None:
        c = math.sqrt(2.0 / math.pi)
        out.copy_(0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3.0)))))

    library.impl("gelu_new", gelu_new, "CPU")
    _kernels.append(library)


@contextlib.contextmanager
def model_parallel(vllm_config: Any) -> Iterator[None]:
    """`vllm_config` current, and a one-process model-parallel group, inside the block."""
    from vllm.config import set_current_vllm_config
    from vllm.distributed import parallel_state

    with set_current_vllm_config(vllm_config):
        if not parallel_state.model_parallel_is_initialized():
            store = tempfile.mkdtemp(prefix="vllm-cpu-") + "/store"
            parallel_state.init_distributed_environment(
                world_size=1,
                rank=0,
                distributed_init_method=f"file://{store}",
                local_rank=0,
                backend="gloo",
            )
            parallel_state.initialize_model_parallel(1, 1)
        yield
