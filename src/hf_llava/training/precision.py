"""Which precision to train in on a CPU: bf16 autocast only where the CPU computes bf16 natively.

Design notes
- On x86 CPUs without AVX512-BF16 or AMX, PyTorch and oneDNN emulate bf16 matrix products: they run tens of times
  slower than fp32, so a recipe that asks for `bf16: true` would turn minutes into hours. The ATen CPU capability
  rules out the common case at once (AVX2 and below have no bf16 kernels); above it a short timed probe decides,
  because an AVX512 CPU may or may not have the BF16 extension, and `ONEDNN_MAX_CPU_ISA` can cap oneDNN below what
  the CPU has. The probe times one matrix product of the size of a small LLM's projection in both dtypes.
- `auto` therefore never picks bf16 where it is emulated; `fp32` and `bf16` force the choice (bf16 means: autocast
  where the recipe asks for it; fp32 means nowhere).
- Only the CPU is judged here: on a GPU the recipes' own settings apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16")
# ATen capabilities whose kernels have no bf16 instructions (torch.backends.cpu.get_cpu_capability())
_NO_BF16_CAPABILITIES = {"DEFAULT", "NO AVX", "AVX", "AVX2"}
# bf16 must beat fp32 by this factor to be worth autocast's casts (natively it is several times faster, emulated tens
# of times slower, so the margin only guards against noise)
_SPEEDUP_NEEDED = 1.25


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"


def _best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up: kernel selection and allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def probe_bf16_speedup(rows: int = 512, inner: int = 576, cols: int = 1536) -> float:
    """fp32 time / bf16 time of one (rows x inner) @ (inner x cols) matrix product on the CPU (> 1: bf16 faster)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=generator), torch.randn(inner, cols, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return _best_of(lambda: a @ b) / _best_of(lambda: a16 @ b16)


def choose_precision(requested: str = "auto") -> Precision:
    """The precision to train in on this CPU: `requested` unless it is "auto", else bf16 only where it is native."""
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return Precision(requested, "asked for")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in _NO_BF16_CAPABILITIES:
        return Precision("fp32", f"this CPU's kernels are {capability}: bf16 would be emulated, many times slower")
    speedup = probe_bf16_speedup()
    if speedup >= _SPEEDUP_NEEDED:
        return Precision("bf16", f"this CPU ({capability}) runs bf16 matrix products natively ({speedup:.1f}x fp32)")
    return Precision("fp32", f"bf16 matrix products are not faster than fp32 on this CPU ({capability}: "
                             f"{speedup:.2f}x), so bf16 is emulated or not worth it")
