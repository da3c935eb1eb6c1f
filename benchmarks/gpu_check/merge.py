"""The output merge (``token_merge.compress`` "tome") against its matmul bound, on the device.

The bound is the one benchmarks/token_merge.py defines: any bipartite matching must compute
the source-by-destination similarity product [B, S, C] @ [B, C, D] (S sources, D = the plan's
destinations). ``compress`` does its arithmetic in float32 whatever the grid's dtype, so the
bound is that product in float32; the grid is timed in bfloat16 (what a bf16 tower gives) and
float32.
"""

from __future__ import annotations

import torch

from token_merge import compress, plan_tome

from .timing import median_ms


def merge_rows(
    side: int, channels: int, num_tokens: int, batches: tuple[int, ...], repeats: int, device: str
) -> list[dict]:
    """One row per (batch, grid dtype): bound and tome milliseconds, their ratio."""
    plan = plan_tome(side, side, num_tokens)
    num_src = side * side - plan.num_dst
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for batch in batches:
        # fresh random inputs: zeros or constants would hide wrong indexing and time faster
        src = torch.randn(batch, num_src, channels, device=device, generator=gen)
        dst_t = torch.randn(batch, channels, plan.num_dst, device=device, generator=gen)
        bound = median_ms(lambda: src @ dst_t, repeats, warmup=3, device=device)  # noqa: B023
        flops = 2 * batch * num_src * plan.num_dst * channels
        for dtype in (torch.bfloat16, torch.float32):
            grid = torch.randn(batch, side, side, channels, device=device, generator=gen)
            grid = grid.to(dtype)
            tome = median_ms(
                lambda: compress(grid, "tome", num_tokens=num_tokens),  # noqa: B023
                repeats,
                warmup=3,
                device=device,
            )
            rows.append(
                {
                    "grid": f"{side}x{side} -> {num_tokens}",
                    "batch": batch,
                    "channels": channels,
                    "dtype": str(dtype).removeprefix("torch."),
                    "merged": plan.num_merged,
                    "bound_ms": bound,
                    "bound_tflops": flops / (bound / 1e3) / 1e12,
                    "tome_ms": tome,
                    "tome_over_bound": tome / bound,
                }
            )
    return rows
