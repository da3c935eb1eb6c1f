"""How many tokens block-wise ToMe merges in each block: the plan ``blockwise_forward`` runs.

One bipartite round per block can merge at most the ceil(n/2) source tokens of the n patch
tokens entering it, so a plan is a list r_i (one per block) summing to N - K that respects
that limit. ``merge_schedule`` makes ToMe's constant-r plan, moved earlier where the limit
forces it; ``check_schedule`` validates one given by hand.
"""

from __future__ import annotations

from collections.abc import Sequence


def max_merges(num_tokens: int) -> int:
    """The most tokens one round can merge away from n patch tokens: its ceil(n/2) sources
    (alternating destinations take floor(n/2) positions; sources need a destination)."""
    return (num_tokens + 1) // 2 if num_tokens >= 2 else 0


def min_reachable(num_patches: int, num_blocks: int) -> int:
    """The fewest patch tokens ``num_blocks`` rounds can leave: n -> floor(n/2) each block."""
    n = num_patches
    for _ in range(num_blocks):
        n -= max_merges(n)
    return n


def merge_schedule(num_patches: int, num_tokens: int, num_blocks: int) -> list[int]:
    """r_i per block: N = ``num_patches`` patch tokens down to K = ``num_tokens`` in L blocks.

    Rule: ToMe's constant r (R // L for R = N - K, plus one in the first R % L blocks),
    clipped by the bipartite limit r_i <= ceil(n_i / 2), n_i the patch count entering block
    i. The limit is applied backwards from K: the token count after block i may be at most
    U_i = 2 U_{i+1} + 1 (U_L = K), so merges a late block cannot take move to earlier
    blocks (front-loading only where forced: 8x8 -> 7 in 4 blocks is [15, 18, 16, 8]).
    Where the limit does not bind (e.g. RADIO-H, 48x48 -> 196 in 32 blocks: 28 x 66 then
    4 x 65) max(r) - min(r) <= 1.

    Raises ValueError for K outside [1, N] or below ``min_reachable(N, L)`` (one round per
    block halves the tokens at most: 64 patches in 4 blocks reach 4, not 1).
    """
    for name, value in (("num_patches", num_patches), ("num_blocks", num_blocks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
        raise ValueError(f"num_tokens must be an int; got {num_tokens!r}")
    if not 1 <= num_tokens <= num_patches:
        raise ValueError(
            f"num_tokens must be in [1, num_patches] = [1, {num_patches}]; got {num_tokens}"
        )
    floor = min_reachable(num_patches, num_blocks)
    if num_tokens < floor:
        raise ValueError(
            f"block-wise ToMe cannot reach num_tokens = {num_tokens} from {num_patches} patches "
            f"in {num_blocks} blocks: one bipartite round per block at most halves the tokens, "
            f"so the minimum is {floor}. Use num_tokens >= {floor}, a deeper model, or the "
            f"output-level merger (token_merge.compress(grid, 'tome', num_tokens))."
        )
    total = num_patches - num_tokens
    upper = [num_tokens] * (num_blocks + 1)  # U_i: most tokens allowed after block i - 1
    for i in range(num_blocks - 1, -1, -1):
        upper[i] = min(num_patches, 2 * upper[i + 1] + 1)
    # Token count entering each block: the even plan (q per block, one more in the first
    # ``extra`` blocks), clipped by the limit. The clip keeps counts non-increasing and each
    # step within the limit: min of two non-increasing sequences; see the tests' sweep.
    q, extra = divmod(total, num_blocks)
    counts = [min(num_patches - i * q - min(i, extra), upper[i]) for i in range(num_blocks + 1)]
    return [counts[i] - counts[i + 1] for i in range(num_blocks)]


def check_schedule(schedule: Sequence[int], num_patches: int, num_tokens: int) -> list[int]:
    """Validate an explicit schedule (one r_i per block); return it as a list of ints."""
    r = [int(v) for v in schedule]
    if sum(r) != num_patches - num_tokens or any(v < 0 for v in r):
        raise ValueError(
            f"schedule must be non-negative merges summing to num_patches - num_tokens = "
            f"{num_patches} - {num_tokens} = {num_patches - num_tokens}; got {r} (sum {sum(r)})"
        )
    n = num_patches
    for i, v in enumerate(r):
        if v > max_merges(n):
            raise ValueError(
                f"schedule merges {v} tokens in block {i}, but only {max_merges(n)} of the "
                f"{n} patch tokens entering it are sources; move merges to earlier blocks "
                f"or use merge_schedule({num_patches}, {num_tokens}, {len(r)})"
            )
        n -= v
    return r


def resolve_schedule(
    num_patches: int, num_tokens: int, depth: int, schedule: Sequence[int] | None
) -> list[int]:
    """``merge_schedule``'s plan, or the explicit ``schedule`` validated against it."""
    if schedule is None:
        return merge_schedule(num_patches, num_tokens, depth)
    merge_schedule(num_patches, num_tokens, depth)  # validates K with the same messages
    if len(schedule) != depth:
        raise ValueError(
            f"schedule needs one r per block ({depth}); got {len(schedule)}: {list(schedule)}"
        )
    return check_schedule(schedule, num_patches, num_tokens)


def check_blockwise_tome(num_tokens: object, feature_layers: Sequence[int] | None) -> int | None:
    """A tower's ``blockwise_tome`` setting: K, an int >= 1 (or None: off). It excludes
    per-block ``feature_layers``: the merged blocks keep no grid to read them from."""
    if num_tokens is None:
        return None
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"blockwise_tome must be an int >= 1 (tokens to keep); got {num_tokens!r}")
    if feature_layers is not None:
        raise ValueError(
            "blockwise_tome merges tokens inside the blocks, so per-block feature_layers "
            "are not available; use one of them"
        )
    return num_tokens
