"""``build_encoder(spec)``: one entry point for every vision tower.

spec is a registry name (a key of ``ENCODERS``, the table in ``encoder.registry_table``:
"radio_v2.5-h", "c-radio_v3-l", "siglip2-so400m-patch16-512", "clip-vit-l-336", "dinov2-l",
...), a hub id, a local hub-style folder, or a torch.hub RADIO checkpoint file. Which loader
runs is decided by the table's row or by the checkpoint's own config.json ("args" -> RADIO,
else its ``model_type``), never by substrings of a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import VisionEncoder
from .hf_tower_checkpoint import (
    fetch_hub_json,
    load_tower,
    read_config,
    tower_classes,
    weight_files,
)
from .radio_checkpoint import load_radio
from .registry_table import ENCODERS, RegisteredEncoder, registry_names

__all__ = ["ENCODERS", "RegisteredEncoder", "build_encoder", "registry_names"]


def build_encoder(spec: str | Path, **overrides: Any) -> VisionEncoder:
    """Build a vision tower; ``overrides`` go to its loader (``load_radio`` or
    ``load_tower``), e.g. ``feature_layers=[-2]``, ``dtype=torch.bfloat16``,
    ``adaptor_names=["siglip"]`` (RADIO only)."""
    name = str(spec)
    if name in ENCODERS:  # the loader resolves the name to the row's hub id and resolutions
        loader = load_radio if ENCODERS[name].loader == "radio" else load_tower
        return loader(name, **overrides)
    path = Path(spec)
    if path.is_file():  # a torch.hub RADIO checkpoint
        return load_radio(path, **overrides)
    if path.is_dir():
        return _build_from_folder(path, overrides)
    config = fetch_hub_json(  # only config.json, to decide which loader runs
        name,
        "config.json",
        why_hub=f"cannot build an encoder from {name!r}: it is not a registry name, a local "
        "folder or a checkpoint file",
        known=", ".join(registry_names()),
    )
    if "args" in config:
        return load_radio(name, **overrides)
    tower_classes(config, origin=f"{name} (hub config.json)")  # unknown model_type -> error
    return load_tower(name, **overrides)


def _build_from_folder(path: Path, overrides: dict[str, Any]) -> VisionEncoder:
    config = read_config(path)
    if "args" in config:
        return load_radio(path, **overrides)
    tower_classes(config, origin=str(path / "config.json"))
    if not weight_files(path):
        raise ValueError(
            f"{path} is not a RADIO checkpoint folder (its config.json has no 'args') and has "
            f"no weights to load as a {config.get('model_type')!r} tower (*.safetensors or "
            "*.bin); save the model there with save_pretrained"
        )
    return load_tower(path, **overrides)
