"""Output token merging: compress an encoder's patch grid to a fixed budget of K tokens.

Pure torch (plus Pillow for pictures); imports nothing from the rest of the project.

    >>> from token_merge import compress
    >>> out = compress(grid, "tome", num_tokens=256)   # grid [B, h, w, C]
    >>> out.tokens.shape, out.sizes.shape, out.assignment.shape
    ([B, 256, C], [B, 256], [B, h*w])
"""

from .compress import (
    DST_MODES,
    METHODS,
    Compressed,
    compress,
    reconstruction_error,
    unmerge,
)
from .compressor import (
    BUDGETED_METHODS,
    DEFAULT_SETTINGS,
    SETTINGS,
    TokenCompressor,
    unshuffle_scale,
)
from .matching import (
    TomePlan,
    alternating_destinations,
    bipartite_soft_matching,
    choose_lattice,
    compose,
    exact_stride,
    merge_tokens,
    plan_destinations,
    plan_tome,
    strided_destinations,
)
from .visualize import token_colors, visualize

__all__ = [
    "BUDGETED_METHODS",
    "DEFAULT_SETTINGS",
    "DST_MODES",
    "METHODS",
    "SETTINGS",
    "Compressed",
    "TokenCompressor",
    "TomePlan",
    "alternating_destinations",
    "bipartite_soft_matching",
    "choose_lattice",
    "compose",
    "compress",
    "exact_stride",
    "merge_tokens",
    "plan_destinations",
    "plan_tome",
    "reconstruction_error",
    "strided_destinations",
    "token_colors",
    "unmerge",
    "unshuffle_scale",
    "visualize",
]
