"""The projector from visual tokens to the LLM's embedding space."""

from __future__ import annotations

from torch import Tensor, nn
from transformers.activations import ACT2FN


class Projector(nn.Module):
    """LayerNorm(C') -> Linear(C', H) -> act -> Linear(H, D): [..., C'] -> [..., D].

    The LayerNorm keeps RADIO's large activations from swamping the LLM (NVlabs/RADIO#15);
    ``layer_norm=False`` gives LLaVA's ``mlp2x_gelu``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        *,
        layer_norm: bool = True,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.norm = nn.LayerNorm(in_dim) if layer_norm else nn.Identity()
        self.linear_1 = nn.Linear(in_dim, hidden_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(self.norm(tokens))))
