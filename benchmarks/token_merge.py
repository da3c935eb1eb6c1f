"""Speed of output token merging against its lower bound, measured in one run.

The bound is the source-by-destination similarity matmul alone ([B, S, C] @ [B, C, D]): any
bipartite matching has to compute it. Also timed: a textbook vectorised implementation in the
ToMeSD style (normalise everything, gather sources and destinations, argsort, scatter-reduce),
and the baselines. Prints medians and ratios; the goal for `tome` is within 2x of the bound.

    python benchmarks/token_merge.py [--batch 4] [--channels 1280] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: this folder would shadow the token_merge package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from token_merge import compress, plan_destinations, plan_tome


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()  # warm-up: allocator, MKL, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def textbook_tome(x: torch.Tensor, dst_idx: torch.Tensor, r: int) -> torch.Tensor:
    """ToMeSD-style single round, mode "mean": gather + argsort + scatter_reduce."""
    _, n, c = x.shape
    is_dst = torch.zeros(n, dtype=torch.bool)
    is_dst[dst_idx] = True
    src_idx = (~is_dst).nonzero().squeeze(1)
    unit = x / x.norm(dim=-1, keepdim=True)
    a, d = unit[:, src_idx], unit[:, dst_idx]
    node_max, node_idx = (a @ d.transpose(1, 2)).max(dim=-1)
    edge = node_max.argsort(dim=-1, descending=True)[..., None]
    unm, srcm = edge[:, r:], edge[:, :r]
    target = node_idx[..., None].gather(1, srcm)
    src, dst = x[:, src_idx], x[:, dst_idx]
    kept = src.gather(1, unm.expand(-1, -1, c))
    moved = src.gather(1, srcm.expand(-1, -1, c))
    dst = dst.scatter_reduce(1, target.expand(-1, -1, c), moved, reduce="mean")
    return torch.cat([kept, dst], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"B={args.batch}, C={args.channels}, K={args.tokens}; median of {args.repeats}\n"
    )
    print(
        "| grid | r | bound: src@dstT (ms) | tome (ms) | tome / bound | textbook (ms) "
        "| textbook / bound | avgpool (ms) | unshuffle (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for side in (48, 32):
        grid = torch.randn(args.batch, side, side, args.channels)
        plan = plan_tome(side, side, args.tokens)
        num_src = side * side - plan.num_dst
        src = torch.randn(args.batch, num_src, args.channels)
        dst_t = torch.randn(args.batch, args.channels, plan.num_dst)
        dst_idx = plan_destinations(side, side, plan)
        flat = grid.reshape(args.batch, -1, args.channels)
        bound = median_ms(lambda: src @ dst_t, args.repeats)  # noqa: B023
        tome = median_ms(lambda: compress(grid, "tome", num_tokens=args.tokens), args.repeats)  # noqa: B023
        text = median_ms(lambda: textbook_tome(flat, dst_idx, plan.num_merged), args.repeats)  # noqa: B023
        pool = median_ms(lambda: compress(grid, "avgpool", num_tokens=args.tokens), args.repeats)  # noqa: B023
        unsh = median_ms(lambda: compress(grid, "unshuffle", num_tokens=args.tokens), args.repeats)  # noqa: B023
        print(
            f"| {side}x{side} -> {args.tokens} | {plan.num_merged} | {bound:.1f} | {tome:.1f} | "
            f"{tome / bound:.2f}x | {text:.1f} | {text / bound:.2f}x | {pool:.1f} | {unsh:.1f} |"
        )


if __name__ == "__main__":
    main()
