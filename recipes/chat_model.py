"""Loading a trained model for `radio-vlm chat` and `radio-vlm ui`, with bad input turned into
one-line errors that name the fix (``ChatInputError``), and the compressor override.

    >>> model, processor, warning = load_chat_model("runs/quickstart/runs/tome/stage3_sft")
    >>> model, processor, warning = load_chat_model(folder, compressor="avgpool", num_tokens=8)

A folder with a stage's ``complete.json`` loads through ``vlm.training.load_stage`` (its files
checked against their hashes); any other saved folder through ``vlm.saved.load_saved``. Either
may be a model or a LoRA stage's adapter (merged into its base on load).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from token_merge import BUDGETED_METHODS, TokenCompressor

# where `make demo` (radio-vlm quickstart) leaves its main model, the ToMe one
DEMO_MODEL = Path("runs/quickstart/runs/tome/stage3_sft")
MODEL_FILES = ("config.json", "processor_config.json")


class ChatInputError(ValueError):
    """Bad input from the user (a path, an option); the message is one line naming the fix.
    A ValueError, as the other subcommands' user errors are."""


def load_chat_model(
    folder: str | Path,
    *,
    device: str | None = None,
    compressor: str | None = None,
    num_tokens: int | None = None,
) -> tuple[Any, Any, str | None]:
    """(model in eval mode on ``device``, processor, override warning or None).

    device: default cuda when there is one, else cpu.
    compressor / num_tokens: run with another token-merging method or budget K than the
        model was trained with (an experiment: the warning says so).
    """
    from safetensors import SafetensorError

    from vlm.saved import load_saved
    from vlm.training.checkpoints import MARKER
    from vlm.training.loading import load_stage

    folder = Path(folder).expanduser()
    check_model_folder(folder)
    try:
        if (folder / MARKER).is_file():
            model, processor = load_stage(folder)
        else:
            model, processor = load_saved(folder)
    except (OSError, ValueError, SafetensorError) as err:  # a truncated weights file
        raise ChatInputError(f"cannot load the model in {folder}: {one_line(err)}") from err
    warning = override_compressor(model, processor, compressor, num_tokens)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor, warning


def check_model_folder(folder: Path) -> None:
    """``ChatInputError`` unless ``folder`` looks like a saved model (config + processor)."""
    hint = (
        "pass --pretrained the folder a training stage wrote (its train.output_dir, e.g. "
        f"{DEMO_MODEL} after `make demo`)"
    )
    if not folder.exists():
        raise ChatInputError(f"no such folder: {folder}; {hint}")
    if not folder.is_dir():
        raise ChatInputError(f"{folder} is a file, not a model folder; {hint}")
    from vlm.saved import ADAPTER_CONFIG, is_adapter

    files = (ADAPTER_CONFIG, "processor_config.json") if is_adapter(folder) else MODEL_FILES
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise ChatInputError(f"{folder} is not a saved model (no {' or '.join(missing)}); {hint}")


def override_compressor(
    model: Any, processor: Any, method: str | None, num_tokens: int | None
) -> str | None:
    """Swap the model's and the processor's token compressor for ``method`` at budget
    ``num_tokens`` (either may be None: keep the saved one). Returns the warning to show, or
    None when nothing changed. ``ChatInputError`` when the projector cannot take the result."""
    saved = model.compressor
    if method is None and num_tokens is None:
        return None
    method = method or saved.method
    if method not in BUDGETED_METHODS:
        raise ChatInputError(
            f"--compressor {method} is not an option here; use {' or '.join(BUDGETED_METHODS)} "
            "(the methods with a budget K and tokens as wide as the encoder's features)"
        )
    if model.vision_tower.blockwise_tome is not None:
        raise ChatInputError(
            "this model's encoder merges tokens inside its blocks (blockwise ToMe); its budget is "
            "fixed when it is built, so drop --compressor/--num-tokens"
        )
    width = model.vision_tower.hidden_size
    if saved.output_dim(width) != width:
        raise ChatInputError(
            f"this model's projector takes {saved.method} tokens {saved.output_dim(width)} wide; "
            f"{method} gives {width}-wide ones, so it cannot run with --compressor/--num-tokens"
        )
    if num_tokens is None:
        num_tokens = saved.num_tokens
        if num_tokens is None:
            raise ChatInputError(f"--compressor {method} needs --num-tokens K (the budget)")
    if num_tokens < 1:
        raise ChatInputError(f"--num-tokens must be >= 1; got {num_tokens}")
    if (method, num_tokens) == (saved.method, saved.num_tokens):
        return None
    options = {"stride": None} if method != saved.method else {"stride": saved.stride}
    new = TokenCompressor(method, num_tokens, dst=saved.dst, seed=saved.seed, **options)
    try:  # exactly K tokens per image, however elongated: never fewer than K patches
        images = dataclasses.replace(processor.image_processor, min_patches=new.min_patches)
    except ValueError as err:
        raise ChatInputError(f"--num-tokens {num_tokens} is too many: {one_line(err)}") from err
    model.compressor = processor.compressor = new
    model.config.compressor = new.settings()
    processor.image_processor = images
    return (
        f"warning: this model was trained with {saved.method} at K={saved.num_tokens} visual "
        f"tokens per image; running it with {method} at K={num_tokens} is an experiment, "
        "expect answers to suffer"
    )


def one_line(err: BaseException) -> str:
    """An exception's message on one line (a CLI error must be one line)."""
    return " ".join(str(err).split()) or type(err).__name__
