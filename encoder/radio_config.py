"""RADIO checkpoints described for transformers' native ``RadioConfig``.

A RADIO checkpoint (hub folder or torch.hub file) carries the *training* ``args`` of the
reference code, not a transformers config: ``RadioConfig.from_pretrained`` ignores them and
keeps C-RADIOv4-H defaults. ``radio_config_from_args`` translates them: dims from the
architecture name (``ARCHITECTURES``), then ``model_kwargs`` overrides, prefix tokens from
the teachers, the position table from ``cpe_max_size``, and the input conditioner and
``summary_idxs`` from the checkpoint's own tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import RadioConfig


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    mlp_ratio: float = 4.0
    patch_size: int = 16
    swiglu: bool = (
        False  # DINOv2-g's fused SwiGLU MLP (hidden = 2/3 of mlp_ratio, to a multiple of 8)
    )


# timm architecture names used by RADIO checkpoints (``args.model``).
ARCHITECTURES: dict[str, Architecture] = {
    "vit_tiny_patch16_224": Architecture(192, 12, 3),
    "vit_small_patch16_224": Architecture(384, 12, 6),
    "vit_base_patch16_224": Architecture(768, 12, 12),
    "vit_large_patch16_224": Architecture(1024, 24, 16),
    "vit_huge_patch16_224": Architecture(1280, 32, 16),
    "vit_giant_patch16_224": Architecture(1536, 40, 24),
    "vit_so400m_patch16_siglip_256": Architecture(1152, 27, 16, mlp_ratio=4304 / 1152),
}

# DINOv2-with-registers students (RADIOv2.5-g): the reference wraps DINOv2's own ViT
# (``radio_model.model.inner.*``); its summary is cls token 0 and it skips 1 + 4 prefix tokens.
DINOV2_STUDENTS: dict[str, Architecture] = {
    "dino_v2_g_student": Architecture(1536, 40, 24, patch_size=14, swiglu=True),
    "dino_v2_l_student": Architecture(1024, 24, 16, patch_size=14),
}
DINOV2_PREFIX_TOKENS = 5

# ``model_kwargs`` key in the checkpoint -> RadioConfig field
_KWARG_FIELDS = {
    "embed_dim": "hidden_size",
    "depth": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
}


def radio_config_from_args(
    args: dict[str, Any],
    *,
    summary_idxs: torch.Tensor | list[int],
    norm_mean: torch.Tensor | list[float],
    norm_std: torch.Tensor | list[float],
    patch_size: int | None = None,
    max_resolution: int = 2048,
    **overrides: Any,
) -> RadioConfig:
    """A ``RadioConfig`` for the ViT described by a checkpoint's training ``args``.

    args:         the checkpoint's ``args`` (a dict; hub ``config.json["args"]`` or the
                  torch.hub file's Namespace as ``vars(...)``).
    summary_idxs: the checkpoint's ``summary_idxs`` buffer (which cls tokens form the summary).
    norm_mean/std: the checkpoint's input conditioner (3 values each), not assumed CLIP's.
    patch_size:   from the hub config when given; else from the architecture.
    max_resolution: the position table's size when ``args`` has no ``cpe_max_size``.
    overrides:    any ``RadioConfig`` field, applied last (e.g. for an architecture name that
                  is not in ``ARCHITECTURES``: hidden_size, num_hidden_layers, ...).
    """
    name = args.get("model")
    arch_fields: dict[str, Any] = {}
    arch = ARCHITECTURES.get(name) or DINOV2_STUDENTS.get(name)
    if arch is not None:
        arch_fields = {
            "hidden_size": arch.hidden_size,
            "num_hidden_layers": arch.num_hidden_layers,
            "num_attention_heads": arch.num_attention_heads,
            "mlp_ratio": arch.mlp_ratio,
            "patch_size": arch.patch_size,
            "use_swiglu_ffn": arch.swiglu,
        }
    elif not {"hidden_size", "num_hidden_layers", "num_attention_heads"} <= overrides.keys():
        known = sorted(ARCHITECTURES) + sorted(DINOV2_STUDENTS)
        raise ValueError(
            f"unknown RADIO architecture args.model = {name!r}; known: {known}. "
            "For another ViT pass its dims as overrides: hidden_size=..., "
            "num_hidden_layers=..., num_attention_heads=... (and mlp_ratio=..., patch_size=...)."
        )
    for key, value in (args.get("model_kwargs") or {}).items():
        if key in _KWARG_FIELDS:
            arch_fields[_KWARG_FIELDS[key]] = value
    if patch_size is not None:
        arch_fields["patch_size"] = patch_size
    p = overrides.get("patch_size", arch_fields.get("patch_size", 16))

    if name in DINOV2_STUDENTS:
        # One summary token (the reference returns token 0 and ignores summary_idxs); the
        # other prefix tokens are registers whatever the teachers say.
        num_cls, registers, summary_idxs = 1, DINOV2_PREFIX_TOKENS - 1, [0]
    else:
        num_cls = num_cls_tokens(args)
        registers = num_registers(args, num_cls)
    fields: dict[str, Any] = {
        **arch_fields,
        "num_cls_tokens": num_cls,
        "num_registers": registers,
        "max_img_size": round((args.get("cpe_max_size") or max_resolution) / p) * p,
        "summary_idxs": [int(i) for i in torch.as_tensor(summary_idxs).flatten()],
        "norm_mean": [float(v) for v in torch.as_tensor(norm_mean).flatten()],
        "norm_std": [float(v) for v in torch.as_tensor(norm_std).flatten()],
        **overrides,
    }
    return RadioConfig(**fields)


def num_cls_tokens(args: dict[str, Any]) -> int:
    """One cls token per unique teacher name when ``cls_token_per_teacher`` (which, as in the
    reference code, defaults to true when the checkpoint's args do not say), else one."""
    teachers = args.get("teachers") or []
    if args.get("cls_token_per_teacher", True) and teachers:
        return len({t["name"] for t in teachers})
    if args.get("cls_token_per_teacher") and not teachers:
        raise ValueError("args.cls_token_per_teacher is set but args.teachers names no teacher")
    return 1


def num_registers(args: dict[str, Any], num_cls: int) -> int:
    """``cpe_num_registers`` when set, else pad the prefix to a multiple of ``register_multiple``."""
    if args.get("cpe_num_registers") is not None:
        return int(args["cpe_num_registers"])
    multiple = args.get("register_multiple")
    return multiple - num_cls % multiple if multiple else 0
