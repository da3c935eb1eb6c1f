"""The registry table: every name ``build_encoder`` accepts and what it needs to build it.

A leaf module (no project imports) so that ``encoder.registry`` (which imports the loaders)
and the loaders themselves (which resolve names given to them directly and list the names in
their errors) read the same table without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Loader = Literal["radio", "tower"]


@dataclass(frozen=True)
class RegisteredEncoder:
    """A published encoder known by name.

    loader: "radio" (``load_radio``) or "tower" (``load_tower``: SigLIP, SigLIP2, CLIP, DINOv2;
            the family comes from the checkpoint's ``config.json``, never from the name).
    hub_id: where the checkpoint lives on the Hugging Face hub.
    patch_size, max_resolution, preferred_resolution: RADIO only (None for towers, whose
            checkpoints say it themselves): how the model card says it likes its inputs, used
            when a RADIO checkpoint's own config does not say.
    """

    loader: Loader
    hub_id: str
    patch_size: int | None = None
    max_resolution: int | None = None
    preferred_resolution: int | None = None


def _radio(
    hub_id: str, patch_size: int, max_resolution: int, preferred_resolution: int
) -> RegisteredEncoder:
    return RegisteredEncoder("radio", hub_id, patch_size, max_resolution, preferred_resolution)


def _tower(hub_id: str) -> RegisteredEncoder:
    return RegisteredEncoder("tower", hub_id)


# RADIO: NVlabs/RADIO ``common.py`` and the hub model cards. SigLIP2 "-<res>" checkpoints are
# fixed-resolution (model_type "siglip"); "-naflex" ones take the variable-resolution path.
ENCODERS: dict[str, RegisteredEncoder] = {
    "radio_v2.5-b": _radio("nvidia/RADIO-B", 16, 2048, 768),
    "radio_v2.5-l": _radio("nvidia/RADIO-L", 16, 2048, 768),
    "radio_v2.5-h": _radio("nvidia/RADIO-H", 16, 2048, 768),
    "radio_v2.5-g": _radio("nvidia/RADIO-g", 14, 1792, 896),
    "c-radio_v2-g": _radio("nvidia/C-RADIOv2-g", 16, 2048, 768),
    "c-radio_v3-b": _radio("nvidia/C-RADIOv3-B", 16, 2048, 512),
    "c-radio_v3-l": _radio("nvidia/C-RADIOv3-L", 16, 2048, 512),
    "c-radio_v3-h": _radio("nvidia/C-RADIOv3-H", 16, 2048, 512),
    "c-radio_v3-g": _radio("nvidia/C-RADIOv3-g", 16, 2048, 512),
    "c-radio_v4-h": _radio("nvidia/C-RADIOv4-H", 16, 2048, 512),
    "siglip-b-patch16-224": _tower("google/siglip-base-patch16-224"),
    "siglip-l-patch16-384": _tower("google/siglip-large-patch16-384"),
    "siglip-so400m-patch14-224": _tower("google/siglip-so400m-patch14-224"),
    "siglip-so400m-patch14-384": _tower("google/siglip-so400m-patch14-384"),
    "siglip2-b-patch16-224": _tower("google/siglip2-base-patch16-224"),
    "siglip2-b-patch16-512": _tower("google/siglip2-base-patch16-512"),
    "siglip2-l-patch16-512": _tower("google/siglip2-large-patch16-512"),
    "siglip2-so400m-patch14-384": _tower("google/siglip2-so400m-patch14-384"),
    "siglip2-so400m-patch16-384": _tower("google/siglip2-so400m-patch16-384"),
    "siglip2-so400m-patch16-512": _tower("google/siglip2-so400m-patch16-512"),
    "siglip2-g-patch16-384": _tower("google/siglip2-giant-opt-patch16-384"),
    "siglip2-b-patch16-naflex": _tower("google/siglip2-base-patch16-naflex"),
    "siglip2-so400m-patch16-naflex": _tower("google/siglip2-so400m-patch16-naflex"),
    "clip-vit-b-16": _tower("openai/clip-vit-base-patch16"),
    "clip-vit-l": _tower("openai/clip-vit-large-patch14"),
    "clip-vit-l-336": _tower("openai/clip-vit-large-patch14-336"),
    "dinov2-s": _tower("facebook/dinov2-small"),
    "dinov2-b": _tower("facebook/dinov2-base"),
    "dinov2-l": _tower("facebook/dinov2-large"),
    "dinov2-g": _tower("facebook/dinov2-giant"),
    "dinov2-s-reg": _tower("facebook/dinov2-with-registers-small"),
    "dinov2-b-reg": _tower("facebook/dinov2-with-registers-base"),
    "dinov2-l-reg": _tower("facebook/dinov2-with-registers-large"),
    "dinov2-g-reg": _tower("facebook/dinov2-with-registers-giant"),
}


def registry_names(loader: Loader | None = None) -> list[str]:
    """Every registry name ``build_encoder`` accepts, sorted; only ``loader``'s when given."""
    return sorted(name for name, entry in ENCODERS.items() if loader in (None, entry.loader))


def registered(name: str | None, loader: Loader) -> RegisteredEncoder | None:
    """The table's row for ``name`` when it is one of ``loader``'s names, else None."""
    entry = ENCODERS.get(name) if isinstance(name, str) else None
    return entry if entry is not None and entry.loader == loader else None
