"""The machine's dense matmul speed: what a FLOP count is divided by to become seconds.

A leaf (no liftlm imports, torch on first use): the cost benchmarks (``liftlm.bench``, which re-exports these
names from ``liftlm.bench.common``) and the time estimate that ``liftlm internalize`` prints
(``liftlm.estimate``) share it, without the core importing the benchmarks.
"""
from __future__ import annotations

import math
import time


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA, MPS; nothing to wait for on a CPU)."""
    import torch

    kind = getattr(device, "type", str(device)).split(":")[0]
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def matmul_probe(device="cpu", dtype=None, size: int | None = None, seconds: float = 0.3, rounds: int = 3) -> dict:
    """The machine's dense matmul speed: ``rounds`` timed rounds of ``size``×``size`` products (after a
    warm-up), each about ``seconds`` long; the best round's GFLOP/s (2·n³ FLOPs per product)."""
    import torch

    dev = torch.device(device)
    dtype = dtype or torch.float32
    n = size or (4096 if dev.type == "cuda" else 1024)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, dtype)
    b = torch.randn(n, n, generator=g).to(dev, dtype)
    flops = 2 * n**3
    for _ in range(2):
        a @ b
    synchronize(dev)
    start = time.perf_counter()
    a @ b
    synchronize(dev)
    one = max(time.perf_counter() - start, 1e-6)
    reps = max(1, math.ceil(seconds / one))
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(dev)
        best = max(best, flops * reps / (time.perf_counter() - start))
    return {"gflops": round(best / 1e9, 2), "size": n, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads()}
