"""``TokenCompressor``: the compressor settings a model holds, and everything a caller needs
to know about them (the one owner of that knowledge): the defaults, which settings each method
uses, the tokens an h x w grid gives, the output width, the fewest patches an image needs.

    >>> c = TokenCompressor.from_settings({"method": "tome", "num_tokens": 256})
    >>> c.num_output_tokens(48, 36), c.output_dim(1280), c.min_patches   # 256, 1280, 256
    >>> unshuffle_scale(8, 8, 16)                                        # 2: 4x4 = 16 tokens
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from .compress import (
    DST_MODES,
    METHODS,
    Compressed,
    check_budget,
    compress,
    resolve_unshuffle_scale,
)

SETTINGS = ("method", "num_tokens", "stride", "dst", "seed", "scale")
DEFAULT_SETTINGS: dict[str, Any] = {
    "method": "tome",
    "num_tokens": 256,
    "stride": None,
    "dst": "top-left",
    "seed": 0,
    "scale": None,
}
BUDGETED_METHODS = ("tome", "avgpool")  # exactly num_tokens (K) tokens whatever the grid


def unshuffle_scale(h: int, w: int, num_tokens: int) -> int:
    """The unshuffle scale s that turns an h x w grid into exactly ``num_tokens`` tokens
    (ceil(h/s) * ceil(w/s) = K); a ValueError when no s does."""
    scale = resolve_unshuffle_scale(h, w, num_tokens, None)
    count = math.ceil(h / scale) * math.ceil(w / scale)
    if count != num_tokens:
        raise ValueError(
            f"unshuffle cannot give exactly K={num_tokens} tokens from a {h}x{w} grid (scale "
            f"{scale} gives {count}); choose K = ceil(h/s) * ceil(w/s) for some s"
        )
    return scale


class TokenCompressor(nn.Module):
    """The settings of ``compress`` held by a model: grid [B, h, w, C] -> ``Compressed``.

    It has no parameters; ``num_output_tokens``, ``output_dim`` and ``min_patches`` tell a
    model how many placeholder tokens to reserve, how wide the projector input is and how
    small an image may get.
    """

    def __init__(
        self,
        method: str = "tome",
        num_tokens: int | None = None,
        *,
        stride: tuple[int, int] | None = None,
        dst: str = "top-left",
        seed: int = 0,
        scale: int | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        if dst not in DST_MODES:  # here, not at the first forward: a model is built with it
            raise ValueError(f"dst must be one of {list(DST_MODES)}; got {dst!r}")
        if method in BUDGETED_METHODS and num_tokens is None:
            raise ValueError(f"method {method!r} needs num_tokens (the budget K)")
        if method == "unshuffle" and num_tokens is None and scale is None:
            scale = 2
        self.method, self.num_tokens, self.stride = method, num_tokens, stride
        self.dst, self.seed, self.scale = dst, seed, scale

    def settings(self) -> dict[str, Any]:
        """The JSON-safe constructor arguments (``stride`` as a list or None)."""
        settings = {key: getattr(self, key) for key in SETTINGS}
        settings["stride"] = None if self.stride is None else list(self.stride)
        return settings

    @classmethod
    def from_settings(
        cls, settings: dict[str, Any], *, fixed_width: bool = False
    ) -> TokenCompressor:
        """Inverse of ``settings()``; an unknown key is an error naming it.

        fixed_width: for a model whose projector input width C' must not depend on the image
            size: unshuffle then needs an explicit ``scale``, and ``num_tokens`` is dropped for
            the methods that do not use a budget (so saved defaults never conflict).
        """
        if unknown := sorted(set(settings) - set(SETTINGS)):
            raise ValueError(f"unknown compressor settings {unknown}; known: {list(SETTINGS)}")
        settings = dict(settings)
        if fixed_width:
            method = settings.get("method", DEFAULT_SETTINGS["method"])
            if method == "unshuffle" and settings.get("scale") is None:
                raise ValueError(
                    "compressor 'unshuffle' in a VLM needs scale=s (the projector's input width "
                    "s*s*C must not depend on the image size); set the compressor's scale (e.g. "
                    "unshuffle_scale(h, w, K) for exactly K tokens) instead of num_tokens"
                )
            if method not in BUDGETED_METHODS:
                settings["num_tokens"] = None
        stride = settings.get("stride")
        return cls(**{**settings, "stride": None if stride is None else tuple(stride)})

    @property
    def min_patches(self) -> int | None:
        """The fewest patches an image must have for exactly K tokens (budgeted methods)."""
        return self.num_tokens if self.method in BUDGETED_METHODS else None

    def forward(self, grid: Tensor, metric: Tensor | None = None) -> Compressed:
        return compress(
            grid,
            self.method,
            self.num_tokens,
            stride=self.stride,
            dst=self.dst,
            seed=self.seed,
            metric=metric,
            scale=self.scale,
        )

    def num_output_tokens(self, h: int, w: int) -> int:
        """Tokens produced for an h x w grid."""
        if self.method in BUDGETED_METHODS:
            return check_budget(self.num_tokens, h, w, self.method)
        if self.method == "unshuffle":
            s = resolve_unshuffle_scale(h, w, self.num_tokens, self.scale)
            return math.ceil(h / s) * math.ceil(w / s)
        return h * w

    def output_dim(self, channels: int, grid_hw: tuple[int, int] | None = None) -> int:
        """C' for input width C (s*s*C for ``unshuffle``; needs ``grid_hw`` when s comes from K)."""
        if self.method != "unshuffle":
            return channels
        if self.scale is None and grid_hw is None:
            raise ValueError("unshuffle with a token budget instead of a scale needs grid_hw")
        s = self.scale or resolve_unshuffle_scale(*grid_hw, self.num_tokens, None)
        return s * s * channels

    def extra_repr(self) -> str:
        opts = {"method": self.method, "num_tokens": self.num_tokens}
        if self.method == "tome":
            opts |= {"stride": self.stride, "dst": self.dst}
        if self.method == "unshuffle":
            opts["scale"] = self.scale
        return ", ".join(f"{k}={v!r}" for k, v in opts.items() if v is not None)
