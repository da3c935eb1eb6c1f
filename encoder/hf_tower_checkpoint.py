"""Loading SigLIP, SigLIP2, CLIP and DINOv2 checkpoints as ``HFVisionTower``s.

The tower class comes from the checkpoint's ``config.json`` ``model_type`` (never from its
name); the weights load with ``from_pretrained`` on the family's vision-model class, which
takes the ``vision_config`` / ``vision_model.*`` part of full CLIP/SigLIP/SigLIP2 checkpoints.
Normalisation comes from ``preprocessor_config.json`` when there is one, else the family's
published defaults.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPVisionModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    PreTrainedModel,
    Siglip2VisionModel,
    SiglipVisionModel,
)

from .hf_towers import ClipTower, Dinov2Tower, HFVisionTower, Siglip2NaflexTower, SiglipTower
from .radio_checkpoint import quiet_transformers
from .registry_table import registered, registry_names

# config.json model_type -> (tower, transformers vision model). Full CLIP/SigLIP(2) models
# ("clip", "siglip", "siglip2") load only their vision part.
TOWER_MODEL_TYPES: dict[str, tuple[type[HFVisionTower], type[PreTrainedModel]]] = {
    "clip": (ClipTower, CLIPVisionModel),
    "clip_vision_model": (ClipTower, CLIPVisionModel),
    "siglip": (SiglipTower, SiglipVisionModel),
    "siglip_vision_model": (SiglipTower, SiglipVisionModel),
    "siglip2": (Siglip2NaflexTower, Siglip2VisionModel),
    "siglip2_vision_model": (Siglip2NaflexTower, Siglip2VisionModel),
    "dinov2": (Dinov2Tower, Dinov2Model),
    "dinov2_with_registers": (Dinov2Tower, Dinov2WithRegistersModel),
}

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def load_tower(
    source: str | Path,
    *,
    feature_layers: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    blockwise_tome: int | None = None,
    aggregation: str = "sparse",
) -> HFVisionTower:
    """Load a SigLIP / SigLIP2 / CLIP / DINOv2 vision tower: a registry name (``ENCODERS``),
    a hub id or a local folder (``config.json`` + weights, optionally
    ``preprocessor_config.json``).

    dtype:               the model's parameter dtype (normalisation stays float32).
    attn_implementation: "sdpa", "eager", ... as transformers' ``from_pretrained``.
    image_mean/std:      override the checkpoint's normalisation.
    blockwise_tome:      K, to merge tokens inside every block down to K (``HFVisionTower``).
    aggregation:         "sparse" only: feature_layers are single blocks (the argument exists so
                         that asking a tower for RADIO's dense averaging is a clear error).
    """
    if aggregation != "sparse":
        raise ValueError(
            f"aggregation={aggregation!r}: dense layer averaging is RADIO's (its intermediate "
            "normaliser); SigLIP, CLIP and DINOv2 towers take feature_layers as single blocks, "
            "aggregation='sparse'"
        )
    name = str(source)
    entry = registered(name, "tower")
    repo = entry.hub_id if entry else name
    folder = Path(repo)
    if folder.is_dir():
        config = read_config(folder)
        tower_cls, model_cls = tower_classes(config, origin=str(folder / "config.json"))
        if not weight_files(folder):
            raise ValueError(
                f"{folder} has a config.json but no weights ({', '.join(_WEIGHT_PATTERNS)}); "
                "save the model there with save_pretrained or copy its weights next to it"
            )
        preprocessor = _read_json(folder / "preprocessor_config.json")
    else:
        config = fetch_hub_json(
            repo,
            "config.json",
            why_hub=f"cannot load a vision tower from {repo!r}: not a registry name or a local "
            "folder",
            known=", ".join(registry_names("tower")),
        )
        tower_cls, model_cls = tower_classes(config, origin=f"{repo} (hub config.json)")
        preprocessor = _hub_preprocessor(repo)
    model = _from_pretrained(model_cls, repo, dtype, attn_implementation)
    mean, std = _normalisation(preprocessor)
    return tower_cls(
        model,
        image_mean=image_mean if image_mean is not None else mean,
        image_std=image_std if image_std is not None else std,
        feature_layers=feature_layers,
        source=name,
        blockwise_tome=blockwise_tome,
    )


def tower_classes(
    config: dict[str, Any], origin: str
) -> tuple[type[HFVisionTower], type[PreTrainedModel]]:
    """(tower class, transformers model class) for a checkpoint's config.json."""
    model_type = config.get("model_type")
    if model_type not in TOWER_MODEL_TYPES:
        raise ValueError(
            f"{origin} has model_type {model_type!r}, which is not a supported vision tower; "
            f"supported model types: {', '.join(sorted(TOWER_MODEL_TYPES))} (and RADIO "
            "checkpoints, whose config.json has 'args')"
        )
    return TOWER_MODEL_TYPES[model_type]


def read_config(folder: Path) -> dict[str, Any]:
    """A checkpoint folder's config.json as a dict; a clear error when it is missing."""
    config = _read_json(folder / "config.json")
    if config is None:
        raise ValueError(
            f"{folder} has no config.json: not a checkpoint folder (expected a hub-style "
            "folder with config.json + weights, as written by save_pretrained)"
        )
    return config


def weight_files(folder: Path) -> list[Path]:
    """Weight files (safetensors or PyTorch bins, sharded or not) in a checkpoint folder."""
    return sorted(f for pattern in _WEIGHT_PATTERNS for f in folder.glob(pattern))


def fetch_hub_file(repo_id: str, filename: str) -> Path:
    """One file of a hub repo, through huggingface_hub's cache."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename))


def fetch_hub_json(repo_id: str, filename: str, *, why_hub: str, known: str) -> dict[str, Any]:
    """A JSON file of a hub repo; a failed fetch (offline, unknown repo, malformed id) is a
    ValueError that starts with ``why_hub`` (why the hub was asked) and lists ``known`` names."""
    try:
        return json.loads(fetch_hub_file(repo_id, filename).read_text())
    except Exception as err:
        raise ValueError(
            f"{why_hub}, and fetching its {filename} from the hub failed "
            f"({type(err).__name__}: {err}). Registry names: {known}."
        ) from err


# --------------------------------------------------------------------------- internals


def _from_pretrained(
    model_cls: type[PreTrainedModel],
    source: str,
    dtype: torch.dtype | None,
    attn_implementation: str | None,
) -> PreTrainedModel:
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    # Text towers / projections of full checkpoints are expected leftovers: silence the
    # report and check what matters (missing and mismatched vision weights) here.
    with quiet_transformers():
        model, info = model_cls.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
    if missing or mismatched:
        raise ValueError(
            f"the weights in {source} do not fit {model_cls.__name__} built from its config: "
            f"missing {missing[:8]}, mismatched {[str(k) for k in mismatched[:8]]}. Is "
            "config.json the one saved with these weights?"
        )
    return model.eval()


def _normalisation(
    preprocessor: dict[str, Any] | None,
) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """(mean, std) from a preprocessor_config.json; None = the family's defaults."""
    if preprocessor is None:
        return None, None
    if preprocessor.get("do_normalize") is False:  # the model was trained on plain [0, 1]
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return preprocessor.get("image_mean"), preprocessor.get("image_std")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _hub_preprocessor(repo_id: str) -> dict[str, Any] | None:
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return json.loads(fetch_hub_file(repo_id, "preprocessor_config.json").read_text())
    except RemoteEntryNotFoundError:  # the repo has none: the family's defaults apply
        return None
    except Exception as err:
        warnings.warn(
            f"could not fetch preprocessor_config.json of {repo_id!r} ({type(err).__name__}: "
            f"{err}); normalising with the model family's published mean/std",
            stacklevel=3,
        )
        return None
