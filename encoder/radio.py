"""RADIO behind the ``VisionEncoder`` interface, on transformers' native ``RadioModel``.

    >>> enc = load_radio("path/to/RADIO-H")                # see encoder.radio_checkpoint
    >>> out = enc(pixel_values)                             # [B, 3, H, W] RGB in [0, 1]
    >>> out.summary.shape, out.grid.shape                   # [B, S], [B, H/16, W/16, C]

The ViT itself is transformers' ``RadioModel``; this module adds what a RADIO checkpoint has
beyond it: the PHI-S feature normaliser, the intermediate normaliser, teacher adaptors and
feature selection (sparse or dense intermediates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import RadioConfig, RadioModel

from .base import EncoderOutput, VisionEncoder, resolve_layers
from .blockwise_schedule import check_blockwise_tome
from .blockwise_tome import blockwise_tome_forward
from .radio_dinov2 import RadioDinoV2Model
from .radio_heads import Adaptor, FeatureNormalizer, IntermediateNormalizer

AGGREGATIONS = ("sparse", "dense")


class RadioEncoder(VisionEncoder):
    """A RADIO checkpoint behind the ``VisionEncoder`` interface.

    feature_layers: None (the final features, PHI-S-normalised when the checkpoint has it) or
        block indices (negative counts from the end) whose outputs are concatenated along C.
    aggregation:    "sparse" (the chosen blocks) or "dense" (the mean of each group of blocks
        ending at a chosen index; the first group starts at block 0).
    adaptor_names:  teacher heads to run on every forward (``EncoderOutput.adaptors``).
    blockwise_tome: K, to merge tokens inside every block (ToMe with proportional attention,
        the paper's Table A4) down to K patch tokens; the output then carries ``compressed``.
    """

    def __init__(
        self,
        model: RadioModel,
        *,
        preferred_resolution: tuple[int, int],
        max_resolution: int,
        feature_normalizer: FeatureNormalizer | None = None,
        inter_feature_normalizer: IntermediateNormalizer | None = None,
        adaptors: dict[str, Adaptor] | None = None,
        adaptor_names: Sequence[str] | None = None,
        feature_layers: Sequence[int] | None = None,
        aggregation: str = "sparse",
        version: str | None = None,
        blockwise_tome: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.feature_normalizer = feature_normalizer
        self.inter_feature_normalizer = inter_feature_normalizer
        self.adaptors = nn.ModuleDict(adaptors or {})
        self.version = version
        self.patch_size = model.config.patch_size
        self.preferred_resolution = preferred_resolution
        self.max_resolution = max_resolution
        self.adaptor_names = self._check_adaptors(adaptor_names or [])
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {aggregation!r}")
        if aggregation == "dense" and feature_layers is None:
            raise ValueError(
                "aggregation='dense' averages the blocks of each group ending at a chosen "
                "block; give feature_layers too (e.g. [9, 19, 30, 31] for 32 blocks: the "
                "groups 0-9, 10-19, 20-30, 31)"
            )
        self.aggregation = aggregation
        self.feature_layers = None if feature_layers is None else self._check_layers(feature_layers)
        self.blockwise_tome = check_blockwise_tome(blockwise_tome, feature_layers)
        width = model.config.hidden_size
        self.hidden_size = width * (1 if self.feature_layers is None else len(self.feature_layers))

    @property
    def config(self) -> RadioConfig:
        return self.model.config

    @property
    def source(self) -> str | None:
        """The RADIO version the checkpoint names (a registry name), if it names one."""
        return self.version

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """The input conditioner's mean (``RadioConfig.norm_mean``, the checkpoint's own)."""
        return tuple(float(v) for v in self.config.norm_mean)

    def drop_adaptors(self) -> None:
        """Free the teacher heads (adaptors): ``forward`` then returns no ``adaptors``."""
        self.adaptors = nn.ModuleDict()
        self.adaptor_names = []

    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this encoder's modules (not its weights) with
        ``from_config``: a VLM checkpoint stores it and loads the weights itself. Adaptors are
        not included (a VLM does not use them)."""
        inter = self.inter_feature_normalizer
        return {
            "type": "radio",
            "radio_config": self.config.to_dict(),
            "dinov2_student": isinstance(self.model, RadioDinoV2Model),
            "feature_normalizer": self.feature_normalizer is not None,
            "inter_feature_normalizer": None
            if inter is None
            else {"num_layers": inter.alphas.numel(), "rot_per_layer": inter.rot_per_layer},
            "feature_layers": self.feature_layers,
            "aggregation": self.aggregation,
            "preferred_resolution": list(self.preferred_resolution),
            "max_resolution": self.max_resolution,
            "version": self.version,
            "blockwise_tome": self.blockwise_tome,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RadioEncoder:
        """The modules described by ``get_config()``, with freshly initialised weights."""
        radio_config = RadioConfig(**config["radio_config"])
        model_class = RadioDinoV2Model if config["dinov2_student"] else RadioModel
        width = radio_config.hidden_size
        inter = config["inter_feature_normalizer"]
        return cls(
            model_class(radio_config),
            preferred_resolution=tuple(config["preferred_resolution"]),
            max_resolution=config["max_resolution"],
            feature_normalizer=FeatureNormalizer(width) if config["feature_normalizer"] else None,
            inter_feature_normalizer=None
            if inter is None
            else IntermediateNormalizer(inter["num_layers"], width, inter["rot_per_layer"]),
            feature_layers=config["feature_layers"],
            aggregation=config["aggregation"],
            version=config["version"],
            blockwise_tome=config.get("blockwise_tome"),
        )

    def forward(self, pixel_values: Tensor, output_hidden_states: bool = False) -> EncoderOutput:
        """pixel_values [B, 3, H, W] RGB in [0, 1], H and W multiples of the patch size."""
        h, w = self.check_pixels(pixel_values)
        if self.blockwise_tome is not None:
            if output_hidden_states:
                raise ValueError("blockwise_tome keeps no per-block hidden states on the grid")
            return self._blockwise(pixel_values, (h, w))
        need_hidden = output_hidden_states or self.feature_layers is not None
        out = self.model(pixel_values, output_hidden_states=need_hidden)
        hidden = out.hidden_states if need_hidden else None
        return self._output(
            out.summary, out.last_hidden_state, hidden, (h, w), output_hidden_states
        )

    def encode(self, images: Sequence[Tensor]) -> list[EncoderOutput]:
        """Images of different sizes ([3, H_i, W_i] each) in one packed sequence through
        RadioModel's variable-resolution path (``image_grid_hw``): no padding, each image
        attends only to itself. One output per image, grid [1, h_i, w_i, C]."""
        if len({tuple(image.shape[-2:]) for image in images}) <= 1 or self.blockwise_tome:
            # one size: the dense batch is simpler and as fast; block-wise ToMe runs per size
            return super().encode(images)
        grids = [self.check_pixels(image.unsqueeze(0)) for image in images]
        patches = torch.cat([_patchify(image, self.patch_size) for image in images])
        grid_hw = torch.tensor(grids, device=patches.device)
        need_hidden = self.feature_layers is not None
        out = self.model(patches, image_grid_hw=grid_hw, output_hidden_states=need_hidden)
        lengths = [self.config.num_summary_tokens + h * w for h, w in grids]
        sequences = out.last_hidden_state.split(lengths)
        hidden = [x[0].split(lengths) for x in out.hidden_states] if need_hidden else None
        return [
            self._output(
                out.summary[i : i + 1],
                sequences[i].unsqueeze(0),
                None if hidden is None else tuple(x[i].unsqueeze(0) for x in hidden),
                grid,
                output_hidden_states=False,
            )
            for i, grid in enumerate(grids)
        ]

    def _blockwise(self, pixel_values: Tensor, grid_hw: tuple[int, int]) -> EncoderOutput:
        """Block-wise ToMe down to K tokens; grid = the K tokens copied back to their patches."""
        out = blockwise_tome_forward(self.model, pixel_values, self.blockwise_tome)
        summary, prefix, tokens = out.summary, out.prefix_tokens, out.compressed.tokens
        norm = getattr(self.model, "norm", None)  # the DINOv2 student's final LayerNorm
        if norm is not None:
            width = self.config.hidden_size
            summary = norm(summary.unflatten(-1, (-1, width))).flatten(-2)
            prefix, tokens = norm(prefix), norm(tokens)
        if self.feature_normalizer is not None:
            tokens = self.feature_normalizer(tokens)  # per token: commutes with unmerge
        compressed = dataclasses.replace(out.compressed, tokens=tokens)
        h, w = grid_hw
        grid = compressed.unmerge().reshape(tokens.shape[0], h, w, -1)
        cls_tokens = prefix[:, : self.config.num_cls_tokens]
        adaptors = {}
        for name in self.adaptor_names:
            adaptor_summary, feats = self.adaptors[name](cls_tokens, grid.flatten(1, 2), grid_hw)
            adaptors[name] = EncoderOutput(summary=adaptor_summary, grid=feats)
        return EncoderOutput(summary=summary, grid=grid, adaptors=adaptors, compressed=compressed)

    def _output(
        self,
        summary: Tensor,
        last_hidden_state: Tensor,
        hidden_states: Sequence[Tensor] | None,
        grid_hw: tuple[int, int],
        output_hidden_states: bool,
    ) -> EncoderOutput:
        """From RadioModel's tokens ([B, prefix + h*w, C] each) to an ``EncoderOutput``."""
        h, w = grid_hw
        b = last_hidden_state.shape[0]
        features = last_hidden_state[:, self.config.num_summary_tokens :]
        if self.feature_normalizer is not None:
            features = self.feature_normalizer(features)
        if self.feature_layers is None:
            grid = features.reshape(b, h, w, -1)
        else:
            picked = self._intermediates(hidden_states, self.feature_layers, self.aggregation)
            grid = torch.cat([self._patches(x, h, w) for x in picked], dim=-1)
        hidden = None
        if output_hidden_states:
            hidden = tuple(self._patches(x, h, w) for x in hidden_states[1:])
        cls_tokens = last_hidden_state[:, : self.config.num_cls_tokens]
        adaptors = {}
        for name in self.adaptor_names:
            adaptor_summary, feats = self.adaptors[name](cls_tokens, features, (h, w))
            adaptors[name] = EncoderOutput(summary=adaptor_summary, grid=feats)
        return EncoderOutput(summary=summary, grid=grid, hidden_states=hidden, adaptors=adaptors)

    def forward_intermediates(
        self, pixel_values: Tensor, indices: Sequence[int], aggregation: str = "sparse"
    ) -> list[EncoderOutput]:
        """Summary and patch grid of chosen blocks (as the reference ``forward_intermediates``
        with ``return_prefix_tokens=True, norm=False``)."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {aggregation!r}")
        h, w = self.check_pixels(pixel_values)
        out = self.model(pixel_values, output_hidden_states=True)
        picked = self._intermediates(out.hidden_states, self._check_layers(indices), aggregation)
        summary_idxs = self.model.summary_idxs
        return [
            EncoderOutput(summary=x[:, summary_idxs].flatten(1), grid=self._patches(x, h, w))
            for x in picked
        ]

    # ----------------------------------------------------------------------- internals

    def _intermediates(self, hidden_states, indices: list[int], aggregation: str) -> list[Tensor]:
        """Full token sequences [B, prefix + h*w, C] of the chosen blocks, normalised as the
        reference does (``norm_alpha_scheme="post-alpha"``; cls/register tokens untouched)."""
        blocks = hidden_states[1:]  # hidden_states[0] is the embedding output
        norm = self.inter_feature_normalizer
        skip = self.config.num_summary_tokens

        def normalized(i: int, rot_index: int) -> tuple[Tensor, Tensor | float]:
            return (blocks[i], 1.0) if norm is None else norm(blocks[i], i, rot_index, skip)

        picked, start = [], 0
        for index in indices:
            if aggregation == "sparse":
                y, alpha = normalized(index, index)
                picked.append(alpha * y)
            else:  # mean over the group's blocks; each block its own mean, the end block's rotation
                ys, alphas = zip(
                    *(normalized(i, index) for i in range(start, index + 1)), strict=True
                )
                picked.append(sum(alphas) / len(alphas) * (sum(ys) / len(ys)))
            start = index + 1
        return picked

    def _patches(self, tokens: Tensor, h: int, w: int) -> Tensor:
        return tokens[:, self.config.num_summary_tokens :].reshape(tokens.shape[0], h, w, -1)

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        return resolve_layers(layers, self.config.num_hidden_layers)

    def _check_adaptors(self, names: Sequence[str]) -> list[str]:
        unknown = [n for n in names if n not in self.adaptors]
        if unknown:
            raise ValueError(
                f"adaptor_names {unknown} are not in this checkpoint; it has {sorted(self.adaptors)}"
            )
        return list(names)


def _patchify(image: Tensor, patch: int) -> Tensor:
    """[3, H, W] -> [h*w, 3*patch*patch], raster order, each patch channel-major (c, y, x)
    as RadioModel's packed input expects."""
    c, height, width = image.shape
    h, w = height // patch, width // patch
    return image.reshape(c, h, patch, w, patch).permute(1, 3, 0, 2, 4).reshape(h * w, -1)
