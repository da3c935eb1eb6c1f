"""Loading RADIO checkpoints onto transformers' native ``RadioModel`` without remote code.

Two on-disk formats are read into one ``_Checkpoint``: the hub folder (``config.json`` with
the reference code's ``args`` + ``model.safetensors`` with ``radio_model.*`` keys) and the
torch.hub ``.pth.tar`` (``args`` Namespace + ``state_dict_ema``/``state_dict``, read with
``torch.load(weights_only=True)``). The ViT goes through ``RadioModel.from_pretrained`` with
a config translated from ``args`` (so transformers' key renaming and qkv split apply); the
extras (normalisers, adaptors) load into ``radio_heads`` modules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from transformers import RadioConfig, RadioModel
from transformers.utils import logging as hf_logging

from .radio import RadioEncoder
from .radio_config import DINOV2_STUDENTS, radio_config_from_args
from .radio_dinov2 import INNER, load_dinov2_student
from .radio_heads import Adaptor, FeatureNormalizer, IntermediateNormalizer
from .registry_table import registered, registry_names

# Checkpoint keys (after "radio_model.") that are not part of the ViT.
_EXTRA_PREFIXES = ("adaptors.", "feature_normalizer.", "inter_feature_normalizer.")


@dataclass
class _Checkpoint:
    """What the two on-disk formats have in common once read."""

    args: dict[str, Any]  # the reference code's training args
    tensors: dict[
        str, Tensor
    ]  # hub-style keys: conditioner, summary_idxs, extras (all if torch.hub)
    weights: (
        Path | dict[str, Tensor]
    )  # a hub folder (memory-mapped by transformers) or a state dict
    hub: dict[str, Any]  # the hub config.json ({} for torch.hub files)
    version: str | None


def load_radio(
    source: str | Path,
    *,
    adaptor_names: Sequence[str] | None = None,
    feature_layers: Sequence[int] | None = None,
    aggregation: str = "sparse",
    blockwise_tome: int | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    **config_overrides: Any,
) -> RadioEncoder:
    """Load a RADIO checkpoint: a registry name (``radio_v2.5-h``), a hub id, a hub-style
    folder (``config.json`` with ``args`` + ``*.safetensors``) or a torch.hub ``.pth.tar``.

    blockwise_tome: K, to merge inside every block down to K tokens (see ``RadioEncoder``).
    config_overrides: ``RadioConfig`` fields for architectures the translation does not know.
    """
    path = Path(source)
    if path.is_file():
        ckpt = _read_torch_hub(path)
    else:
        entry = registered(str(source), "radio")
        version = str(source) if entry else None
        if not path.is_dir():
            path = _download(entry.hub_id if entry else str(source))
        ckpt = _read_hub_folder(path, version)
    config, model = _load_vit(ckpt, dtype, attn_implementation, config_overrides)
    extras = {
        k: v for k, v in _sub(ckpt.tensors, "radio_model.").items() if k.startswith(_EXTRA_PREFIXES)
    }
    resolution = ckpt.hub.get("preferred_resolution")
    if resolution is None and (card := registered(ckpt.version, "radio")):
        resolution = card.preferred_resolution  # the model card's, for a checkpoint that names it
    resolution = resolution or 512
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    encoder = RadioEncoder(
        model,
        preferred_resolution=tuple(resolution),
        max_resolution=ckpt.hub.get("max_resolution") or config.max_img_size,
        feature_normalizer=_feature_normalizer(extras, config.hidden_size),
        inter_feature_normalizer=_inter_normalizer(extras, config.hidden_size),
        adaptors=_adaptors(extras, ckpt.hub.get("adaptor_configs") or {}, ckpt.args),
        adaptor_names=adaptor_names,
        feature_layers=feature_layers,
        aggregation=aggregation,
        version=ckpt.version,
        blockwise_tome=blockwise_tome,
    )
    return encoder.to(dtype) if dtype is not None else encoder


def _read_hub_folder(path: Path, version: str | None) -> _Checkpoint:
    hub = json.loads((path / "config.json").read_text())
    if "args" not in hub:
        raise ValueError(
            f"{path / 'config.json'} has no 'args': not a RADIO hub checkpoint. A folder saved by "
            "transformers (model_type 'radio') loads with transformers.RadioModel.from_pretrained."
        )
    tensors = _read_tensors(path, lambda k: k.startswith("radio_model.") and _is_small(k))
    return _Checkpoint(hub["args"], tensors, path, hub, hub.get("version", version))


def _read_torch_hub(path: Path) -> _Checkpoint:
    # weights_only=True: tensors and plain containers, plus the one class RADIO pickles.
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "args" not in checkpoint:
        raise ValueError(
            f"{path} is not a RADIO torch.hub checkpoint (a dict with 'args' and 'state_dict')"
        )
    args = checkpoint["args"]
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    state = checkpoint.get("state_dict_ema") or checkpoint.get("state_dict")
    if state is None:
        raise ValueError(f"{path} has neither 'state_dict_ema' nor 'state_dict'")
    state = hub_state_dict(state, args)
    return _Checkpoint(args, state, state, {}, checkpoint.get("version"))


# torch.hub (training) key prefixes -> the hub's model.safetensors prefixes
_HUB_PREFIXES = {
    "base_model.": "radio_model.model.",
    "input_conditioner.": "radio_model.input_conditioner.",
    "_feature_normalizer.": "radio_model.feature_normalizer.",
    "_intermediate_feature_normalizer.": "radio_model.inter_feature_normalizer.",
}


def hub_state_dict(state: dict[str, Tensor], args: dict[str, Any]) -> dict[str, Tensor]:
    """A torch.hub RADIO state dict with the keys of the hub's ``model.safetensors``.

    ``base_model.*`` -> ``radio_model.model.*``, ``input_conditioner.*``, the normalisers, and
    the teacher heads ``_heads.<i|name>.*`` / ``_feature_projections.<i|name>.*`` ->
    ``radio_model.adaptors.<name>.{head_mlp, feat_mlp}.*``; ``summary_idxs`` (not stored in
    torch.hub files) is computed from the teachers. Other training state is dropped.
    """
    teachers = [t["name"] for t in args.get("teachers") or []]
    heads = {"_heads.": "head_mlp.", "_feature_projections.": "feat_mlp."}
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for old, new in _HUB_PREFIXES.items():
            if key.startswith(old):
                out[new + key.removeprefix(old)] = value
                break
        else:
            for old, new in heads.items():
                if key.startswith(old):
                    slot, rest = key.removeprefix(old).split(".", 1)
                    name = (
                        teachers[int(slot)]
                        if slot.isdigit() and int(slot) < len(teachers)
                        else slot
                    )
                    out[f"radio_model.adaptors.{name}.{new}{rest}"] = value
    out.setdefault("radio_model.summary_idxs", torch.tensor(summary_idxs_from_args(args)))
    return out


def summary_idxs_from_args(args: dict[str, Any]) -> list[int]:
    """Cls slots forming the summary, as the reference's torch.hub loader computes them: with
    one cls token per teacher (the default), the position in ``args.teachers`` of the first
    teacher of each name that has ``use_summary`` (default true); else slot 0."""
    teachers = args.get("teachers") or []
    if not (args.get("cls_token_per_teacher", True) and teachers):
        return [0]
    first: dict[str, int] = {}
    for index, teacher in enumerate(teachers):
        if teacher.get("use_summary", True):
            first.setdefault(teacher["name"], index)
    return sorted(first.values())


def _load_vit(
    ckpt: _Checkpoint, dtype, attn_implementation, overrides
) -> tuple[RadioConfig, RadioModel]:
    """transformers' RadioModel from the translated config; its conversion mapping renames
    the checkpoint keys and splits qkv. Everything but the known extras must fit."""

    def need(key: str) -> Tensor:
        if f"radio_model.{key}" not in ckpt.tensors:
            raise ValueError(f"RADIO checkpoint has no '{key}' tensor; is it a RADIO checkpoint?")
        return ckpt.tensors[f"radio_model.{key}"]

    config = radio_config_from_args(
        ckpt.args,
        summary_idxs=need("summary_idxs"),
        norm_mean=need("input_conditioner.norm_mean"),
        norm_std=need("input_conditioner.norm_std"),
        patch_size=ckpt.hub.get("patch_size"),
        max_resolution=ckpt.hub.get("max_resolution") or 2048,
        **overrides,
    )
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    from_folder = isinstance(ckpt.weights, Path)
    if ckpt.args.get("model") in DINOV2_STUDENTS:  # RADIOv2.5-g: mapped in radio_dinov2
        weights = ckpt.weights
        if from_folder:
            weights = ckpt.tensors | _read_tensors(weights, lambda k: k.startswith(INNER))
        return config, load_dinov2_student(weights, config, dtype)
    with quiet_transformers():
        model, info = RadioModel.from_pretrained(
            ckpt.weights if from_folder else None,
            config=config,
            state_dict=None if from_folder else ckpt.weights,
            output_loading_info=True,
            dtype=dtype,
        )
    unexpected = [
        k
        for k in info["unexpected_keys"]
        if not k.removeprefix("radio_model.").startswith(_EXTRA_PREFIXES)
    ]
    if info["missing_keys"] or unexpected or info["mismatched_keys"]:
        raise ValueError(
            "the checkpoint does not fit the RadioModel built from its args "
            f"(args.model = {ckpt.args.get('model')!r}): missing {sorted(info['missing_keys'])[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}, mismatched {sorted(info['mismatched_keys'])[:8]}. "
            "Pass config overrides (hidden_size=..., num_hidden_layers=..., ...) if the "
            "architecture is not a standard one."
        )
    return config, model.eval()


def _feature_normalizer(extras: dict[str, Tensor], dim: int) -> FeatureNormalizer | None:
    if "feature_normalizer.mean" not in extras:
        return None
    module = FeatureNormalizer(dim)
    module.load_state_dict(_sub(extras, "feature_normalizer."))
    return module


def _inter_normalizer(extras: dict[str, Tensor], dim: int) -> IntermediateNormalizer | None:
    if "inter_feature_normalizer.alphas" not in extras:
        return None
    state = _sub(extras, "inter_feature_normalizer.")
    module = IntermediateNormalizer(
        state["alphas"].numel(), dim, rot_per_layer=state["rotation"].dim() == 3
    )
    module.load_state_dict(state)
    return module


def _adaptors(
    extras: dict[str, Tensor], configs: dict[str, Any], args: dict[str, Any]
) -> dict[str, Adaptor]:
    names = sorted({k.split(".")[1] for k in extras if k.startswith("adaptors.")})
    adaptors = {}
    for name in names:
        state = _sub(extras, f"adaptors.{name}.")
        cfg = configs.get(name) or _infer_adaptor_config(name, state, args)
        adaptor = Adaptor(
            cfg.get("head_idx", 0),
            cfg["summary"],
            cfg["feature"],
            pre_norm="head_mlp.pre_norm.0.weight" in state,
        )
        adaptor.load_state_dict(state)
        adaptors[name] = adaptor.eval()
    return adaptors


def _infer_adaptor_config(
    name: str, state: dict[str, Tensor], args: dict[str, Any]
) -> dict[str, Any]:
    """A torch.hub file has no ``adaptor_configs``: dims from the weights, the cls slot from
    the teacher's ``token_slot`` (default: its position among the teachers)."""

    def mlp(prefix: str) -> dict[str, int]:
        fc1, final = state[f"{prefix}.fc1.weight"], state[f"{prefix}.final.2.weight"]
        inner = {k.split(".")[2] for k in state if k.startswith(f"{prefix}.blocks.")}
        return {
            "input_dim": fc1.shape[1],
            "hidden_dim": fc1.shape[0],
            "output_dim": final.shape[0],
            "num_inner": len(inner),
        }

    slots: dict[str, int] = {}  # the first teacher of a name wins, as in the reference
    for i, teacher in enumerate(args.get("teachers") or []):
        slots.setdefault(teacher["name"], teacher.get("token_slot", i))
    head_idx = slots.get(name, 0) if args.get("cls_token_per_teacher", True) else 0
    return {"head_idx": head_idx, "summary": mlp("head_mlp"), "feature": mlp("feat_mlp")}


def _sub(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _is_small(key: str) -> bool:
    rest = key.removeprefix("radio_model.")
    return rest.startswith(_EXTRA_PREFIXES) or rest in (
        "summary_idxs",
        "input_conditioner.norm_mean",
        "input_conditioner.norm_std",
    )


def _read_tensors(folder: Path, wanted) -> dict[str, Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    tensors = {}
    for file in files:
        with safe_open(file, "pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys() if wanted(k)})  # noqa: SIM118
    return tensors


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors"]))
    except Exception as err:  # offline, unknown repo, ...
        known = ", ".join(registry_names("radio"))
        raise ValueError(
            f"cannot load RADIO from {repo_id!r}: not a local folder or file, and the hub "
            f"download failed ({type(err).__name__}: {err}). Known names: {known}."
        ) from err


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Extras (adaptors, normalisers) are loaded here, so transformers' report of them as
    unexpected keys is noise, and so is a progress bar for a few hundred tensors; real
    mismatches are checked from the loading info."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
