"""Rebuilding an encoder's modules from its ``get_config()`` description.

A VLM checkpoint stores the description (in ``VLMConfig.vision_config``) and its own weights,
so loading it needs neither the original encoder folder nor the network.
"""

from __future__ import annotations

from typing import Any

from .base import VisionEncoder
from .hf_towers import HFVisionTower
from .radio import RadioEncoder

# ``get_config()["type"]`` -> the class whose ``from_config`` rebuilds it. Not a registry: it
# rebuilds saved modules; names -> checkpoints are ``encoder.registry_table.ENCODERS``.
ENCODER_TYPES: dict[str, type[VisionEncoder]] = {"radio": RadioEncoder, "hf_tower": HFVisionTower}


def encoder_from_config(config: dict[str, Any]) -> VisionEncoder:
    """The modules described by ``VisionEncoder.get_config()``, freshly initialised."""
    kind = config.get("type")
    if kind not in ENCODER_TYPES:
        raise ValueError(
            f"unknown encoder type {kind!r} in the vision config; known: {sorted(ENCODER_TYPES)}"
        )
    return ENCODER_TYPES[kind].from_config(config)
