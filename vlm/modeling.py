"""``VisionLanguageModel``: vision tower -> token compressor -> projector -> any causal LM.

    pixel_values [N, 3, H, W] (or a list of [3, H_i, W_i]; with tiling every row is a tile)
      -> vision_tower -> grid [N, h, w, C]
      -> compressor   -> tokens [N, K, C']            (K per image, whatever its size)
      -> projector    -> [N, K, D]
      -> written into the LLM's input embeddings at the image placeholder positions.

The LLM is a complete ``AutoModelForCausalLM`` (its own head, loss, cache and generation
code); this class only builds ``inputs_embeds``. During ``generate`` transformers passes
``pixel_values`` at the prefill step only; later steps reuse the KV cache.

Tiling (``config.tiling``, made by the processor): every row of ``pixel_values`` is one tile,
an image's tiles adjacent and in order, and its placeholder span holds their tokens one tile
after another; so the tiles need no grouping here (each is compressed like an image), and the
model only checks that every row is a tile.

Inputs are checked, never fixed silently: pixel values must be finite and in [0, 1] (what
``VLMProcessor`` gives; the encoder normalises them itself), ``image_sizes`` when given must
be each image's (H, W), and the image placeholders in ``input_ids`` must match the visual
tokens the images give. Each is a ``ValueError`` naming what was found.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from encoder.from_config import encoder_from_config
from token_merge import TokenCompressor

from .configuration import VLMConfig
from .projector import Projector

logger = logging.getLogger(__name__)


def set_tower_attention(tower: nn.Module, implementation: str | None) -> None:
    """Give the vision tower the attention implementation the LLM uses; one the tower cannot
    run (SigLIP2 has no flash attention) is logged and the tower keeps its own."""
    if implementation is None:
        return
    try:
        tower.set_attn_implementation(implementation)
    except (ValueError, ImportError, NotImplementedError) as err:
        logger.warning(
            "vision tower keeps its attention implementation; %r is not available for it: %s",
            implementation,
            err,
        )


class VisionLanguageModel(PreTrainedModel, GenerationMixin):
    config: VLMConfig
    config_class = VLMConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: VLMConfig) -> None:
        super().__init__(config)
        if config.vision_config is None:
            raise ValueError("VLMConfig.vision_config is empty; build a model with vlm.build_vlm")
        self.vision_tower = encoder_from_config(config.vision_config)
        # The tower's own transformers config comes from a plain dict, so the implementation
        # resolved for this model (from_pretrained(attn_implementation=...)) is handed down.
        set_tower_attention(self.vision_tower, self.config._attn_implementation)
        self.compressor = TokenCompressor.from_settings(config.compressor, fixed_width=True)
        self.projector = build_projector(config, self.vision_tower.hidden_size, self.compressor)
        self.language_model = AutoModelForCausalLM.from_config(config.get_text_config())
        self.post_init()

    # ------------------------------------------------------------- LLM plumbing

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    # ------------------------------------------------------------- vision

    def get_image_features(self, pixel_values: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """Projected visual tokens, one [K_i, D] tensor per image.

        pixel_values: [N, 3, H, W] in [0, 1], or a list of [3, H_i, W_i] (mixed sizes; RADIO
        packs them into one sequence).
        """
        check_pixel_values(pixel_values)
        check_tiles(pixel_values, self.config.tiling)
        tower = next(self.vision_tower.parameters())
        to_tower = {"device": tower.device, "dtype": tower.dtype}
        if isinstance(pixel_values, Tensor):
            outputs = [self.vision_tower(pixel_values.to(**to_tower))]
        else:
            outputs = self.vision_tower.encode([image.to(**to_tower) for image in pixel_values])
        projector_dtype = next(self.projector.parameters()).dtype
        features = []
        for out in outputs:
            compressed = out.compressed if out.compressed is not None else self.compressor(out.grid)
            features.extend(self.projector(compressed.tokens.to(projector_dtype)))
        return features

    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholder tokens one processed image of height x width pixels takes."""
        p = self.vision_tower.patch_size
        return self.compressor.num_output_tokens(height // p, width // p)

    # ------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: Tensor | None = None,
        pixel_values: Tensor | Sequence[Tensor] | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        image_sizes: Tensor | None = None,
        **kwargs: Any,
    ):
        """input_ids [B, L] with ``config.image_token_id`` at every visual-token position;
        returns the LLM's ``CausalLMOutputWithPast`` (loss when ``labels`` are given)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids to find the image placeholders")
            if image_sizes is not None:
                check_image_sizes(pixel_values, image_sizes)
            inputs_embeds = self.insert_images(input_ids, inputs_embeds, pixel_values)
        elif input_ids is not None and _is_prefill(cache):
            count = int((input_ids == self.config.image_token_id).sum())
            if count:
                raise ValueError(
                    f"input_ids hold {count} image placeholder tokens but no pixel_values were "
                    "given; pass the images the processor made the placeholders for"
                )
        if labels is not None:
            # Training: no KV cache. Besides saving memory, transformers only isolates packed
            # samples (position_ids restarting) when no cache exists.
            kwargs.setdefault("use_cache", False)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            **kwargs,
        )

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: Tensor | None = None,
        **model_kwargs: Any,
    ) -> tuple[Tensor | None, dict[str, Any]]:
        """Beam search / ``num_return_sequences``: transformers repeats every tensor along
        dim 0, but ``pixel_values`` and ``image_sizes`` have one row per *image*, so a sample's
        images must be repeated as a block: [a, b] x 2 -> [a, b, a, b]."""
        pixel_values = model_kwargs.pop("pixel_values", None)
        image_sizes = model_kwargs.pop("image_sizes", None)
        if expand_size > 1 and pixel_values is not None:
            if input_ids is None:
                raise ValueError("generation with images needs input_ids (placeholders)")
            order = self._images_by_sample(input_ids, pixel_values)
            rows = [i for images in order for _ in range(expand_size) for i in images]
            if isinstance(pixel_values, Tensor):
                pixel_values = pixel_values[rows]
            else:
                pixel_values = [pixel_values[i] for i in rows]
            if image_sizes is not None:
                image_sizes = image_sizes[rows]
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        if pixel_values is not None:
            model_kwargs["pixel_values"] = pixel_values
        if image_sizes is not None:
            model_kwargs["image_sizes"] = image_sizes
        return input_ids, model_kwargs

    def _images_by_sample(
        self, input_ids: Tensor, pixel_values: Tensor | Sequence[Tensor]
    ) -> list[list[int]]:
        """Which images (in batch order) belong to each row of input_ids, from the rows'
        placeholder counts and each image's token count."""
        sizes = [tuple(image.shape[-2:]) for image in pixel_values]
        counts = (input_ids == self.config.image_token_id).sum(1).tolist()
        order, image = [], 0
        for count in counts:
            mine = []
            while count > 0 and image < len(sizes):
                count -= self.num_image_tokens(*sizes[image])
                mine.append(image)
                image += 1
            if count != 0:
                raise ValueError("image placeholders do not match the images' token counts")
            order.append(mine)
        return order

    def insert_images(
        self, input_ids: Tensor, inputs_embeds: Tensor, pixel_values: Tensor | Sequence[Tensor]
    ) -> Tensor:
        """``inputs_embeds`` [B, L, D] with the images' projected visual tokens written at the
        placeholder positions of ``input_ids`` [B, L] (what the LLM then reads)."""
        mask = input_ids == self.config.image_token_id
        features = self.get_image_features(pixel_values)
        count, total = int(mask.sum()), sum(f.shape[0] for f in features)
        if count != total:
            raise ValueError(
                f"input_ids hold {count} image placeholder tokens but the {len(features)} images "
                f"give {total} visual tokens ({[f.shape[0] for f in features]} each); the "
                "processor and the model disagree on the compressor settings or the image sizes"
            )
        visual = torch.cat(features).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1), visual)


PIXEL_TOLERANCE = 1e-3  # rounding slack around [0, 1]; 0-255 or mean/std inputs are far off


def check_pixel_values(pixel_values: Tensor | Sequence[Tensor]) -> None:
    """ValueError unless every pixel is finite and in [0, 1]: [N, 3, H, W] or [3, H_i, W_i]s.
    One device sync for the whole batch."""
    images = [pixel_values] if isinstance(pixel_values, Tensor) else list(pixel_values)
    if not images:
        return
    stats = torch.stack(
        [
            torch.stack([t.amin().float(), t.amax().float(), (~torch.isfinite(t)).sum().float()])
            for t in images
        ]
    ).tolist()
    bad = int(sum(row[2] for row in stats))
    if bad:
        raise ValueError(
            f"pixel_values hold {bad} NaN or infinite values; pixels must be finite (the "
            "processor refuses such images: check the code that made these)"
        )
    lo, hi = min(row[0] for row in stats), max(row[1] for row in stats)
    if lo < -PIXEL_TOLERANCE or hi > 1 + PIXEL_TOLERANCE:
        raise ValueError(
            f"pixel_values range over [{lo:.4g}, {hi:.4g}], outside [0, 1]: the model takes "
            "pixels as VLMProcessor gives them, floats in [0, 1] (the encoder normalises them "
            "itself). Divide 0-255 values by 255; do not normalise by a mean and std."
        )


def check_image_sizes(pixel_values: Tensor | Sequence[Tensor], image_sizes: Any) -> None:
    """ValueError unless ``image_sizes`` [N, 2] lists each image's (H, W), in order."""
    actual = [list(image.shape[-2:]) for image in pixel_values]
    given = torch.as_tensor(image_sizes).tolist()
    if given != actual:
        raise ValueError(
            f"image_sizes {given} disagree with the sizes of the {len(actual)} images in "
            f"pixel_values {actual} ((H, W) per image, in order); pass the image_sizes the "
            "processor made with these pixel_values, or none"
        )


def check_tiles(pixel_values: Tensor | Sequence[Tensor], tiling: dict | None) -> None:
    """ValueError unless every image of a tiling model is one of its tiles (tile_size square):
    a processor without the model's tiling would give placeholder counts that may even
    match, for images the model never learnt to read."""
    if tiling is None:
        return
    side = tiling["tile_size"]
    sizes = [tuple(image.shape[-2:]) for image in pixel_values]
    if bad := sorted({size for size in sizes if size != (side, side)}):
        raise ValueError(
            f"this model reads images as {side}x{side} px tiles (config.tiling) but "
            f"pixel_values hold images of {bad} (H, W); make the inputs with the model's own "
            "processor (VLMProcessor.from_pretrained of its folder), which tiles them"
        )


def build_projector(config: VLMConfig, vision_width: int, compressor: TokenCompressor) -> Projector:
    """The projector ``config.projector`` describes, from the compressor's output width C'
    to the LLM's width."""
    return Projector(
        compressor.output_dim(vision_width),
        config.get_text_config().hidden_size,
        config.projector["hidden_size"],
        layer_norm=config.projector["layer_norm"],
        act=config.projector["act"],
    )


def _is_prefill(cache: Any) -> bool:
    return cache is None or cache.get_seq_length() == 0
