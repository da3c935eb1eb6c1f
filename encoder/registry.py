"""``build_encoder(spec)``: one entry point for every vision tower.

spec is a registry name (``RADIO_VERSIONS``: "radio_v2.5-h", "c-radio_v3-l", ...), a hub id,
a local hub-style folder, or a torch.hub checkpoint file. Which loader runs is decided by
the registry or by the checkpoint's own files, never by substrings of a name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import VisionEncoder
from .radio_checkpoint import load_radio
from .radio_config import RADIO_VERSIONS


def build_encoder(spec: str | Path, **overrides: Any) -> VisionEncoder:
    """Build a vision tower; ``overrides`` go to its loader (e.g. ``feature_layers=[-4, -1]``,
    ``adaptor_names=["siglip"]``, ``dtype=torch.bfloat16``)."""
    path = Path(spec)
    if str(spec) in RADIO_VERSIONS or path.is_file() or _is_radio_folder(path):
        return load_radio(spec, **overrides)
    if path.is_dir():
        raise ValueError(
            f"{path} is not a RADIO checkpoint folder (config.json with 'args'); other towers "
            "(SigLIP, CLIP, DINOv2) are not supported yet"
        )
    # A hub id: RADIO repos are the only ones supported so far.
    return load_radio(spec, **overrides)


def _is_radio_folder(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and "args" in json.loads(config.read_text())
