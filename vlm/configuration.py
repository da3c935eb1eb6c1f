"""``VLMConfig``: encoder, token compressor, projector and LLM of one vision-language model.

Everything needed to rebuild the modules is in the config (the encoder's own description from
``VisionEncoder.get_config()``, the LLM's ``text_config``), so ``from_pretrained(dir)`` needs
nothing but the saved folder.
"""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from encoder.tiling import Tiling
from token_merge import DEFAULT_SETTINGS

PROJECTOR_DEFAULTS: dict[str, Any] = {
    "layer_norm": True,  # RADIO's activations are large (NVlabs/RADIO#15): normalise first
    "hidden_size": None,  # None: the LLM's width
    "act": "gelu",
}


@strict
class VLMConfig(PreTrainedConfig):
    """Config of ``VisionLanguageModel``.

    vision_config:  the encoder's ``get_config()`` (type, its own model config, feature layers,
                    resolutions); ``encoder_spec`` records where it was built from.
    compressor:     ``token_merge.TokenCompressor`` settings (method, num_tokens K, stride, dst,
                    seed, scale).
    projector:      LayerNorm(C') -> Linear(C', H) -> act -> Linear(H, D_llm); ``hidden_size`` H
                    defaults to the LLM's width.
    tiling:         None, or the ``encoder.tiling.Tiling`` settings (tile_size named) its
                    processor cuts images with: every row of ``pixel_values`` is then a tile.
    text_config:    the causal LM's config.
    image_token / image_token_id: the placeholder each visual token occupies in ``input_ids``;
    image_start_token / image_end_token (+ ids): optional markers around each image's span.
    """

    model_type = "radio_vlm"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    vision_config: dict | None = None
    encoder_spec: str | None = None
    compressor: dict | None = None
    projector: dict | None = None
    tiling: dict | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token: str = "<image>"
    image_token_id: int | None = None
    image_start_token: str | None = None
    image_start_token_id: int | None = None
    image_end_token: str | None = None
    image_end_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        self.compressor = resolve_compressor(self.compressor)
        self.projector = _with_defaults("projector", self.projector, PROJECTOR_DEFAULTS)
        self.tiling = resolve_tiling(self.tiling)
        super().__post_init__(**kwargs)
        # Tying lives in the LLM's own config; mirror it so transformers ties the same weights.
        if self.text_config is not None and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True


def resolve_compressor(settings: dict | None) -> dict[str, Any]:
    """Compressor settings with the defaults filled in; an unknown key is an error."""
    return _with_defaults("compressor", settings, DEFAULT_SETTINGS)


def resolve_tiling(settings: dict | None) -> dict[str, Any] | None:
    """Tiling settings (``encoder.tiling.Tiling``) with the defaults filled in; tile_size
    must be named (the processor resolves it against the encoder)."""
    tiling = Tiling.from_value(settings)
    if tiling is None:
        return None
    if tiling.tile_size is None:
        raise ValueError("VLMConfig.tiling needs its tile_size; build the model with build_vlm")
    return tiling.to_dict()


def _with_defaults(name: str, given: dict | None, defaults: dict[str, Any]) -> dict[str, Any]:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {name} settings {unknown}; known: {sorted(defaults)}")
    return defaults | given
