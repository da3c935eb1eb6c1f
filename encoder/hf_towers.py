"""SigLIP, SigLIP2, CLIP and DINOv2 vision towers from transformers behind ``VisionEncoder``.

    >>> enc = load_tower("google/siglip2-so400m-patch16-512")   # see encoder.hf_tower_checkpoint
    >>> out = enc(pixel_values)             # [B, 3, H, W] RGB in [0, 1], H, W multiples of the patch
    >>> out.summary, out.grid.shape         # [B, S] or None, [B, H/p, W/p, C]

Every tower owns its pixel normalisation (the checkpoint's ``image_mean``/``image_std``,
stored as buffers), runs at any resolution that is a multiple of its patch (interpolated
position embeddings; SigLIP2 NaFlex resizes its own), and drops cls/register tokens from
the grid. What the final features are is each family's own output:

| family          | grid (feature_layers=None)             | summary                        |
|-----------------|----------------------------------------|--------------------------------|
| CLIP            | last block's patch tokens (no norm)    | post-layernormed cls           |
| SigLIP, SigLIP2 | post-layernormed patch tokens          | attention-pooling head, if any |
| DINOv2 (+reg)   | layernormed patch tokens               | layernormed cls                |

``feature_layers`` picks raw block outputs instead (before any final norm), e.g. ``[-2]``
for LLaVA-style CLIP features. ``blockwise_tome=K`` merges tokens inside every block down to
K patch tokens (ToMe with proportional attention, paper Table A4; ``encoder.blockwise_towers``):
the output then carries ``compressed`` (the K final tokens, sizes, assignment) and the grid is
their unmerge; the summary is the family's own, computed on the merged sequence.
``get_config()`` (type "hf_tower") describes the modules so ``HFVisionTower.from_config`` can
rebuild them for a VLM checkpoint without the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformers import (
    CLIPVisionModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    PretrainedConfig,
    PreTrainedModel,
    Siglip2VisionModel,
    SiglipVisionModel,
)
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .base import EncoderOutput, VisionEncoder, resolve_layers
from .blockwise_schedule import check_blockwise_tome
from .blockwise_towers import blockwise_tower_forward, patchify

# A selection for transformers' ``output_hidden_states``: a flag, or indices into the
# hidden-states tuple (index 0 is the embedding output) so that only those are kept.
HiddenSelection = bool | list[int]


class HFVisionTower(VisionEncoder):
    """A transformers vision model behind the ``VisionEncoder`` interface.

    model:          the transformers vision model (``CLIPVisionModel``, ``SiglipVisionModel``,
                    ``Siglip2VisionModel``, ``Dinov2Model``, ``Dinov2WithRegistersModel``).
    image_mean/std: per-channel normalisation of RGB in [0, 1]; None = the family's default.
    feature_layers: None (the family's final features, see the module docstring) or block
                    indices (negative counts from the end), strictly increasing, whose raw
                    outputs are concatenated along C.
    blockwise_tome: K, to merge tokens inside every block down to K patch tokens (the output
                    then carries ``compressed``); excludes feature_layers.
    """

    family: ClassVar[str]
    default_mean: ClassVar[Sequence[float]]
    default_std: ClassVar[Sequence[float]]
    # vision config model_type -> the transformers model class (for ``from_config``)
    model_classes: ClassVar[dict[str, type[PreTrainedModel]]]

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        feature_layers: Sequence[int] | None = None,
        source: str | None = None,
        blockwise_tome: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.source = source
        mean = _channels("image_mean", self.default_mean if image_mean is None else image_mean)
        std = _channels("image_std", self.default_std if image_std is None else image_std)
        if min(std) <= 0:
            raise ValueError(f"image_std must be positive per channel; got {std}")
        # float32 buffers [1, 3, 1, 1]: saved with the model, normalisation done in float32
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.patch_size = int(self.config.patch_size)
        side = self._native_side()
        self.preferred_resolution = (side, side)
        # A sane upper bound, not a hard limit: 4x the training side, at least 1024 px.
        self.max_resolution = max(4 * side, 1024) // self.patch_size * self.patch_size
        self.feature_layers = None if feature_layers is None else self._check_layers(feature_layers)
        self.blockwise_tome = check_blockwise_tome(blockwise_tome, feature_layers)
        width = self.config.hidden_size
        self.hidden_size = width * (1 if self.feature_layers is None else len(self.feature_layers))

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def num_prefix_tokens(self) -> int:
        """cls + register tokens in front of the patch tokens."""
        return 0

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """The checkpoint's ``image_mean`` (the buffer ``normalize`` uses)."""
        return tuple(self.image_mean.flatten().tolist())

    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this tower's modules (not its weights) with
        ``from_config``: a VLM checkpoint stores it and loads the weights itself."""
        return {
            "type": "hf_tower",
            "family": self.family,
            "model_config": self.config.to_dict(),
            "image_mean": self.image_mean.flatten().tolist(),
            "image_std": self.image_std.flatten().tolist(),
            "feature_layers": self.feature_layers,
            "source": self.source,
            "blockwise_tome": self.blockwise_tome,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HFVisionTower:
        """The modules described by ``get_config()``, with freshly initialised weights; the
        family picks the subclass, so ``HFVisionTower.from_config`` rebuilds any of them."""
        towers = {t.family: t for t in (ClipTower, SiglipTower, Siglip2NaflexTower, Dinov2Tower)}
        family = config.get("family")
        if family not in towers:
            raise ValueError(
                f"unknown tower family {family!r} in the vision config; known: {sorted(towers)}"
            )
        tower_cls = towers[family]
        model_type = config["model_config"].get("model_type")
        if model_type not in tower_cls.model_classes:
            raise ValueError(
                f"model_type {model_type!r} is not a {family} vision model; expected one of "
                f"{sorted(tower_cls.model_classes)}"
            )
        model_cls = tower_cls.model_classes[model_type]
        model = model_cls(model_cls.config_class.from_dict(config["model_config"]))
        return tower_cls(
            model.eval(),
            image_mean=config["image_mean"],
            image_std=config["image_std"],
            feature_layers=config["feature_layers"],
            source=config.get("source"),
            blockwise_tome=config.get("blockwise_tome"),
        )

    def normalize(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> normalised pixels in the model's dtype."""
        mean, std = self.image_mean.float(), self.image_std.float()
        return ((pixel_values.float() - mean) / std).to(self.model.dtype)

    def forward(self, pixel_values: Tensor, output_hidden_states: bool = False) -> EncoderOutput:
        """pixel_values [B, 3, H, W] RGB in [0, 1], H and W multiples of ``patch_size``.

        Returns summary [B, S] or None, grid [B, H/p, W/p, hidden_size] and, when asked,
        hidden_states: one [B, H/p, W/p, C] per block (raw block outputs, no prefix tokens).
        With ``blockwise_tome`` also compressed (K tokens [B, K, C], sizes, assignment).
        """
        h, w = self.check_pixels(pixel_values)
        if self.blockwise_tome is not None:
            if output_hidden_states:
                raise ValueError("blockwise_tome keeps no per-block hidden states on the grid")
            return self._blockwise(pixel_values, h, w)
        out = self._run(
            self.normalize(pixel_values), h, w, self._hidden_selection(output_hidden_states)
        )
        return self._assemble(out, h, w, output_hidden_states)

    # ----------------------------------------------------------------------- for subclasses

    def _run(
        self, pixels: Tensor, h: int, w: int, hidden: HiddenSelection
    ) -> BaseModelOutputWithPooling:
        """The transformers model on normalised pixels [B, 3, h*p, w*p]."""
        return self.model(pixels, interpolate_pos_encoding=True, output_hidden_states=hidden)

    def _native_side(self) -> int:
        """Side in pixels of the square images the checkpoint was trained at."""
        return int(self.config.image_size)

    # ----------------------------------------------------------------------- internals

    def _blockwise(self, pixel_values: Tensor, h: int, w: int) -> EncoderOutput:
        """Block-wise ToMe down to K tokens; grid = the K tokens copied back to their patches."""
        out = blockwise_tower_forward(self.model, self.normalize(pixel_values), self.blockwise_tome)
        grid = out.compressed.unmerge().reshape(pixel_values.shape[0], h, w, -1)
        return EncoderOutput(summary=out.summary, grid=grid, compressed=out.compressed)

    def _hidden_selection(self, output_hidden_states: bool) -> HiddenSelection:
        # Only keep the blocks feature_layers needs (hidden_states[0] is the embedding output).
        if output_hidden_states:
            return True
        return False if self.feature_layers is None else [i + 1 for i in self.feature_layers]

    def _assemble(
        self, out: BaseModelOutputWithPooling, h: int, w: int, output_hidden_states: bool
    ) -> EncoderOutput:
        if self.feature_layers is None:
            grid = self._patches(out.last_hidden_state, h, w)
        else:
            blocks = out.hidden_states[1:]
            grid = torch.cat([self._patches(blocks[i], h, w) for i in self.feature_layers], -1)
        hidden = None
        if output_hidden_states:
            hidden = tuple(self._patches(x, h, w) for x in out.hidden_states[1:])
        return EncoderOutput(summary=out.pooler_output, grid=grid, hidden_states=hidden)

    def _patches(self, tokens: Tensor, h: int, w: int) -> Tensor:
        """[B, prefix + h*w (+ padding), C] -> [B, h, w, C], tokens in raster order."""
        start = self.num_prefix_tokens
        return tokens[:, start : start + h * w].reshape(tokens.shape[0], h, w, -1)

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        return resolve_layers(layers, self.config.num_hidden_layers)


class ClipTower(HFVisionTower):
    """CLIP's vision tower (``CLIPVisionModel``); one cls token."""

    family = "clip"
    default_mean = OPENAI_CLIP_MEAN
    default_std = OPENAI_CLIP_STD
    model_classes: ClassVar = {"clip_vision_model": CLIPVisionModel}

    @property
    def num_prefix_tokens(self) -> int:
        return 1


class SiglipTower(HFVisionTower):
    """SigLIP's vision tower (``SiglipVisionModel``), also the fixed-resolution SigLIP2
    checkpoints (model_type "siglip"); no prefix tokens, summary from the pooling head."""

    family = "siglip"
    default_mean = IMAGENET_STANDARD_MEAN
    default_std = IMAGENET_STANDARD_STD
    model_classes: ClassVar = {"siglip_vision_model": SiglipVisionModel}


class Dinov2Tower(HFVisionTower):
    """DINOv2 (``Dinov2Model``) or DINOv2 with registers (``Dinov2WithRegistersModel``);
    tokens are [cls, registers..., patches]. DINOv2 interpolates its positions itself."""

    family = "dinov2"
    default_mean = IMAGENET_DEFAULT_MEAN
    default_std = IMAGENET_DEFAULT_STD
    model_classes: ClassVar = {
        "dinov2": Dinov2Model,
        "dinov2_with_registers": Dinov2WithRegistersModel,
    }

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)

    def _run(
        self, pixels: Tensor, h: int, w: int, hidden: HiddenSelection
    ) -> BaseModelOutputWithPooling:
        return self.model(pixels, output_hidden_states=hidden)


class Siglip2NaflexTower(HFVisionTower):
    """SigLIP2 NaFlex (``Siglip2VisionModel``, model_type "siglip2"): flattened patches +
    ``pixel_attention_mask`` + ``spatial_shapes``, so any aspect ratio runs natively (its
    position embeddings are resized to each image's grid). ``encode`` packs images of
    different sizes into one padded batch with the attention mask, as the model was trained.
    """

    family = "siglip2"
    default_mean = IMAGENET_STANDARD_MEAN
    default_std = IMAGENET_STANDARD_STD
    model_classes: ClassVar = {"siglip2_vision_model": Siglip2VisionModel}

    def _native_side(self) -> int:
        # NaFlex has no image_size: its position table is a sqrt(num_patches)^2 grid.
        return int(self.config.num_patches**0.5) * int(self.config.patch_size)

    def patchify(self, pixels: Tensor) -> Tensor:
        """[B, C, h*p, w*p] -> [B, h*w, p*p*C]: patches in raster order, each flattened as
        (row, column, channel), the layout of transformers' ``Siglip2ImageProcessor``."""
        return patchify(pixels, self.patch_size)

    def _run(
        self, pixels: Tensor, h: int, w: int, hidden: HiddenSelection
    ) -> BaseModelOutputWithPooling:
        b = pixels.shape[0]
        mask = torch.ones(b, h * w, dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[h, w]] * b, dtype=torch.long, device=pixels.device)
        return self.model(
            self.patchify(pixels),
            pixel_attention_mask=mask,
            spatial_shapes=shapes,
            output_hidden_states=hidden,
        )

    def encode(self, images: Sequence[Tensor]) -> list[EncoderOutput]:
        """Images [3, H_i, W_i] in [0, 1] -> one output each (grid [1, h_i, w_i, C]), run as
        one batch padded to the longest patch sequence; padding is masked out of attention
        and of the pooling head. With ``blockwise_tome``, same-size images run as one batch
        each (the merge schedule depends on the grid)."""
        if not images:
            return []
        if self.blockwise_tome is not None:
            return super().encode(images)
        sizes = [self.check_pixels(image.unsqueeze(0)) for image in images]
        patches = [self.patchify(self.normalize(image.unsqueeze(0)))[0] for image in images]
        longest = max(len(x) for x in patches)
        first = patches[0]
        batch = first.new_zeros(len(patches), longest, first.shape[-1])
        mask = torch.zeros(len(patches), longest, dtype=torch.long, device=first.device)
        for i, x in enumerate(patches):
            batch[i, : len(x)] = x
            mask[i, : len(x)] = 1
        out = self.model(
            batch,
            pixel_attention_mask=mask,
            spatial_shapes=torch.tensor(sizes, dtype=torch.long, device=first.device),
            output_hidden_states=self._hidden_selection(False),
        )
        results = []
        for i, (h, w) in enumerate(sizes):
            row = BaseModelOutputWithPooling(
                last_hidden_state=out.last_hidden_state[i : i + 1],
                pooler_output=None if out.pooler_output is None else out.pooler_output[i : i + 1],
                hidden_states=None
                if out.hidden_states is None
                else tuple(None if x is None else x[i : i + 1] for x in out.hidden_states),
            )
            results.append(self._assemble(row, h, w, output_hidden_states=False))
        return results


def _channels(name: str, values: Sequence[float] | float) -> list[float]:
    """Three per-channel floats (a single value is used for all three)."""
    if isinstance(values, int | float):
        values = [values]
    floats = [float(v) for v in (values.flatten() if isinstance(values, Tensor) else values)]
    if len(floats) == 1:  # some processors store one value for all channels
        floats = floats * 3
    if len(floats) != 3:
        raise ValueError(f"{name} must have 3 values (RGB); got {floats}")
    return floats
