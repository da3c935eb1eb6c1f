"""The parts of a RADIO checkpoint that transformers' ``RadioModel`` does not have.

Module and buffer names follow the checkpoint's keys (after ``radio_model.``), so a state
dict loads into them unchanged:

- ``feature_normalizer.{mean, tx}`` (PHI-S): features -> (x - mean) @ tx^T.
- ``inter_feature_normalizer.{alphas, means, rotation}``: block i -> alpha_i *
  (x - means_i) @ rotation_i^T (one rotation for all blocks unless ``rot_per_layer``).
- ``adaptors.<teacher>.{head_mlp, feat_mlp}``: MLP2 teacher heads on the summary token and
  on the patch features.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class FeatureNormalizer(nn.Module):
    """PHI-S standardisation of the final patch features: (x - mean) @ tx^T, in float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("tx", torch.eye(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = (x.float() - self.mean.float()) @ self.tx.float().T
        return y.to(x.dtype)


class IntermediateNormalizer(nn.Module):
    """Per-block standardisation of intermediate features.

    ``forward(x, index, rot_index, skip)`` -> (y, alpha): the first ``skip`` tokens (cls and
    registers) pass unchanged, the rest become (x - means_index) @ rotation_rot^T with
    ``rot_index`` defaulting to ``index`` (dense aggregation passes the group's end block);
    alpha [1, L, 1] is 1 on the skipped tokens and alphas_index elsewhere. The caller applies
    alpha (sparse: alpha * y; dense: mean of the alphas times the mean of the y's).
    """

    def __init__(self, num_layers: int, dim: int, rot_per_layer: bool = False) -> None:
        super().__init__()
        self.rot_per_layer = rot_per_layer
        rotation = torch.eye(dim)
        if rot_per_layer:
            rotation = rotation.expand(num_layers, dim, dim).clone()
        self.register_buffer("alphas", torch.ones(num_layers))
        self.register_buffer("means", torch.zeros(num_layers, dim))
        self.register_buffer("rotation", rotation)

    def forward(
        self, x: Tensor, index: int, rot_index: int | None = None, skip: int = 0
    ) -> tuple[Tensor, Tensor]:
        rot = (
            self.rotation[index if rot_index is None else rot_index]
            if self.rot_per_layer
            else self.rotation
        )
        y = (x[:, skip:].float() - self.means[index].float()) @ rot.float().T
        y = torch.cat([x[:, :skip].float(), y], dim=1).to(x.dtype)
        alpha = torch.ones(1, x.shape[1], 1, device=x.device, dtype=x.dtype)
        alpha[:, skip:] = self.alphas[index].float()
        return y, alpha


class MLP2(nn.Module):
    """RADIO's adaptor MLP: [pre_norm] -> fc1 -> residual [LN, GELU, Linear] blocks ->
    LN, GELU, Linear; with ``upsample_factor`` u > 1 each token yields u x u output tokens."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_inner: int = 0,
        pre_norm: bool = False,
        upsample_factor: int = 1,
    ) -> None:
        super().__init__()
        self.upsample_factor = upsample_factor
        self.pre_norm = (
            nn.Sequential(nn.LayerNorm(input_dim), nn.GELU()) if pre_norm else nn.Identity()
        )
        hidden = hidden_dim * upsample_factor
        self.fc1 = nn.Linear(input_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
            for _ in range(num_inner)
        )
        self.final = nn.Sequential(
            nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, output_dim * upsample_factor**2)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(self.pre_norm(x))
        for block in self.blocks:
            x = x + block(x)
        return self.final(x)


class Adaptor(nn.Module):
    """A teacher head: ``head_mlp`` on its cls token (``head_idx``), ``feat_mlp`` on features."""

    def __init__(
        self, head_idx: int, summary: dict[str, Any], feature: dict[str, Any], pre_norm: bool
    ) -> None:
        super().__init__()
        self.head_idx = head_idx
        self.head_mlp = MLP2(**_mlp_args(summary), pre_norm=pre_norm)
        self.feat_mlp = MLP2(**_mlp_args(feature), pre_norm=pre_norm)

    def forward(
        self, cls_tokens: Tensor, features: Tensor, grid_hw: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """cls_tokens [B, num_cls, C], features [B, h*w, C] -> summary [B, S], grid [B, h', w', F]."""
        summary = cls_tokens[:, 0] if cls_tokens.shape[1] == 1 else cls_tokens[:, self.head_idx]
        dtype = self.head_mlp.fc1.weight.dtype
        summary = self.head_mlp(summary.to(dtype))
        feats = self.feat_mlp(features.to(dtype))
        u = self.feat_mlp.upsample_factor
        h, w = grid_hw
        b = feats.shape[0]
        # each token's output holds a u x u block of finer tokens, row-major, channels last
        grid = (
            feats.reshape(b, h, w, u, u, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h * u, w * u, -1)
        )
        return summary, grid


def _mlp_args(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_dim": cfg["input_dim"],
        "hidden_dim": cfg["hidden_dim"],
        "output_dim": cfg["output_dim"],
        "num_inner": cfg.get("num_inner", 0),
        "upsample_factor": cfg.get("upsample_factor") or 1,
    }
