"""Loading a checkpoint's model weights back into the live model on ``--resume``, strictly.

transformers' Trainer (5.24) resumes a plain model with ``model.load_state_dict(file,
strict=False)``. That bypasses the key conversion ``save_pretrained`` applied on the way out
(the RADIO tower's weights are saved under the hub's names, ``vision_tower.model.radio_model.*``),
so none of the tower's keys match, the mismatch is only logged, and the encoder silently
restarts from its stage-start weights. Here the weights come back through the loading path
of ``from_pretrained`` itself (key conversion, tied weights, sharded files), every key must
be accounted for, and anything missing, unexpected or of another shape is an error.

PEFT models resume through PEFT's own adapter loading (its keys are the model's own, no
conversion); afterwards the adapter state of the live model must equal the saved one exactly.
DeepSpeed resumes from its own engine files (module names, strict) and needs neither.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class ResumeError(ValueError):
    """A checkpoint's weights do not fit the model being resumed."""


def load_model_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Replace ``model``'s weights with ``checkpoint``'s (a ``save_pretrained`` folder), through
    ``from_pretrained``'s loading path; raise ``ResumeError`` unless every key matched.

    The checkpoint is loaded into a second copy of the model on the CPU (peak host memory:
    one extra model), then copied over with ``strict=True``.
    """
    checkpoint = Path(checkpoint)
    dtype = next(model.parameters()).dtype
    loaded, info = type(model).from_pretrained(
        checkpoint, config=model.config, dtype=dtype, output_loading_info=True
    )
    problems = {kind: sorted(info.get(kind) or []) for kind in _LOADING_PROBLEMS}
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        details = "; ".join(f"{kind}: {_preview(keys)}" for kind, keys in problems.items())
        raise ResumeError(
            f"{checkpoint} does not hold this model's weights ({details}). It was written by "
            "another model or version; resume from a checkpoint of this run, or start fresh "
            "(train.resume=false with a new output_dir)"
        )
    result = model.load_state_dict(loaded.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys  # strict raised otherwise
    del loaded


def check_adapter_restored(model: nn.Module, checkpoint: str | Path) -> None:
    """After PEFT's ``load_adapter``: the live adapter (LoRA weights + fully trained modules)
    equals ``checkpoint``'s adapter file key for key, value for value."""
    from peft import get_peft_model_state_dict

    path = Path(checkpoint) / ADAPTER_WEIGHTS
    saved = load_file(path)
    live = get_peft_model_state_dict(model)
    missing, unexpected = sorted(set(live) - set(saved)), sorted(set(saved) - set(live))
    differ = sorted(
        k
        for k in set(live) & set(saved)
        if not torch.equal(live[k].cpu(), saved[k].to(live[k].dtype))
    )
    if missing or unexpected or differ:
        raise ResumeError(
            f"resuming the adapter in {path} did not restore it: "
            f"not in the file {_preview(missing)}, not in the model {_preview(unexpected)}, "
            f"different after loading {_preview(differ)}"
        )


_LOADING_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")


def _preview(keys: list, limit: int = 5) -> str:
    shown = ", ".join(str(k) for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"[{shown}{more}]" if keys else "[]"
