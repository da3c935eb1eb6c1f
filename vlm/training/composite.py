"""Checkpoints written tensor by tensor: a new VLM assembled from its parts' own checkpoints,
and a DeepSpeed stage's save with every weight in the dtype the recipe asked for.

    >>> assemble(recipe.model, seed=0, folder="runs/stage1/base")   # main process only
    >>> model = VisionLanguageModel.from_pretrained("runs/stage1/base")   # partitioned under ZeRO-3

Under DeepSpeed every stage loads its model with ``from_pretrained(dir)``: under ZeRO-3 that
is transformers' own partitioned path (``deepspeed.zero.Init`` during construction, then
each tensor gathered, set on rank 0 and partitioned again), so no process ever holds the full
float32 model. Stage 1 has no such dir; ``assemble`` writes one: the encoder and the new
projector are built in memory (small), the LLM only as a skeleton on the meta device with
its two embedding matrices read from its checkpoint (the image tokens grow them, exactly as
``vlm.build_vlm`` does), and every other LLM tensor is copied from the LLM's own
safetensors files into sharded files, one tensor at a time. The result is what
``build_vlm(...).save_pretrained(dir)`` would write, without the full model in memory.

``save_in_dtype`` is the same writer for a stage's save under DeepSpeed mixed precision,
where the engine keeps every parameter in bf16/fp16: the trained modules' weights come from
the optimizer's float32 master copies, the frozen modules' weights from the checkpoint the
stage started from (frozen: unchanged, and only the file still has them in full precision),
all cast to the recipe's dtype (float32 unless ``model.dtype`` says otherwise).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
from transformers.core_model_loading import revert_weight_conversion

from .checkpoints import write_marker
from .modules import ATTRIBUTES

INDEX = "model.safetensors.index.json"
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
SINGLE = "model.safetensors"
SHARD_BYTES = 2 << 30  # 2 GiB per file: the most one process holds while writing


class ShardWriter:
    """Sharded safetensors + ``model.safetensors.index.json`` (what ``from_pretrained``
    reads). Each tensor's bytes go to disk when it is added (a shard's data is staged in a
    side file, then copied behind its header), so writing holds one tensor at a time."""

    def __init__(self, folder: Path, max_bytes: int = SHARD_BYTES) -> None:
        self.folder, self.max_bytes = Path(folder), max_bytes
        self.headers: list[dict[str, dict]] = []  # each written shard's tensors
        self.current: dict[str, dict] = {}
        self.data: Any = None  # the current shard's staged bytes
        self.offset = self.total = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self.current or any(key in header for header in self.headers):
            raise ValueError(f"tensor {key!r} written twice")
        tensor = tensor.detach().to("cpu").contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if self.current and self.offset + nbytes > self.max_bytes:
            self._flush()
        if self.data is None:
            self.data = open(self._staged(), "wb")  # noqa: SIM115 (closed in _flush)
        self.data.write(tensor.reshape(-1).view(torch.uint8).numpy())
        self.current[key] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [self.offset, self.offset + nbytes],
        }
        self.offset += nbytes
        self.total += nbytes

    def _staged(self) -> Path:
        return self.folder / f".part-{len(self.headers)}.data"

    def _flush(self) -> None:
        header = json.dumps({"__metadata__": {"format": "pt"}, **self.current}).encode()
        header += b" " * (-len(header) % 8)  # the format's 8-byte alignment
        if self.data is None:  # an empty model: an empty file
            self.data = open(self._staged(), "wb")  # noqa: SIM115
        self.data.close()
        staged = self._staged()
        with open(self.folder / f".part-{len(self.headers)}", "wb") as out, open(staged, "rb") as f:
            out.write(len(header).to_bytes(8, "little") + header)
            shutil.copyfileobj(f, out, 16 << 20)
        staged.unlink()
        self.headers.append(self.current)
        self.current, self.data, self.offset = {}, None, 0

    def close(self) -> None:
        if self.current or not self.headers:
            self._flush()
        count, weight_map = len(self.headers), {}
        for i, header in enumerate(self.headers):
            name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            (self.folder / f".part-{i}").rename(self.folder / name)
            weight_map.update(dict.fromkeys(header, name))
        index = {
            "metadata": {"total_size": self.total},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def remove_weights(folder: str | Path) -> None:
    """Delete a saved model's weight files, and the ``.part-*`` files a ``ShardWriter``
    killed before ``close`` leaves behind."""
    folder = Path(folder)
    for old in [*folder.glob("model*.safetensors*"), *folder.glob(".part-*")]:
        old.unlink()


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a saved model (sharded with an index, or one file)."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        return [folder / name for name in sorted(set(index["weight_map"].values()))]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    raise FileNotFoundError(f"{folder} holds no safetensors weights ({SINGLE} or {INDEX})")


def read_tensors(folder: str | Path, keep: Callable[[str], bool]) -> Iterator[tuple[str, Any]]:
    """(file key, tensor) for every tensor of ``folder``'s weights whose key ``keep`` accepts,
    read one at a time (pread, not mmap: a mapped file's pages would stay resident until
    the whole file is done)."""
    for path in weight_files(folder):
        with safe_open(path, framework="pt", backend="pread") as f:
            names = f.keys()  # a safe_open handle is not a dict
            for key in names:
                if keep(key):
                    yield key, f.get_tensor(key)


@contextmanager
def outside_zero3() -> Iterator[None]:
    """Models built inside are ordinary modules even when a ZeRO-3 config is active (the
    assembly builds a meta-device skeleton, which ``deepspeed.zero.Init`` cannot partition)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    active = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = active


def assemble(spec: Any, *, seed: int, folder: str | Path, dtype: torch.dtype | None) -> Path:
    """Write the new model a recipe's ``model`` section (encoder + llm) describes into
    ``folder`` as a finished stage (config, sharded weights, processor, ``complete.json``),
    as ``vlm.training.loading.build_model`` would build it, without ever holding the LLM.
    Main process only; the folder appears whole or not at all."""
    from .loading import _build

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="radio-vlm-assemble-") as scratch, outside_zero3():
        llm_dir, tokenizer = _llm_folder(spec.llm, Path(scratch), dtype)
        llm = _llm_skeleton(llm_dir, dtype, spec.attn_implementation)
        model, processor = _build(spec, seed, dtype, llm=(llm, tokenizer))
        real = {k: v for k, v in model.state_dict().items() if v.device.type != "meta"}
        for target in getattr(model, "all_tied_weights_keys", {}) or {}:
            real.pop(target, None)  # tied to another weight: not saved (save_pretrained too)
        real = revert_weight_conversion(model, real)
        writer = ShardWriter(partial)
        for key, tensor in real.items():
            writer.add(key, tensor)
        prefix = ATTRIBUTES["llm"] + "."
        for key, tensor in read_tensors(llm_dir, lambda k: prefix + k not in real):
            writer.add(prefix + key, tensor)  # as stored (bf16 for hub LLMs); cast on loading
        writer.close()
        model.config.save_pretrained(partial)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(partial)
        processor.save_pretrained(partial)
    _check_complete(model, partial)
    write_marker(partial, "stage", 0, recursive=False)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def _check_complete(model: torch.nn.Module, folder: Path) -> None:
    """Every tensor of the model was written, and nothing else (a name mismatch between the
    LLM's files and its skeleton would otherwise only surface as a random weight)."""
    expected = set(revert_weight_conversion(model, dict(model.state_dict())))
    expected -= set(getattr(model, "all_tied_weights_keys", {}) or {})
    written = set(json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"])
    missing, extra = sorted(expected - written), sorted(written - expected)
    if missing or extra:
        raise ValueError(
            f"assembling {folder}: the parts' checkpoints do not match the model: missing "
            f"{missing[:5]}, unexpected {extra[:5]}"
        )


def _llm_folder(name: str, scratch: Path, dtype: torch.dtype | None) -> tuple[Path, Any]:
    """(folder with the LLM's config and safetensors, tokenizer or None): a local folder,
    a hub id (downloaded), or the tiny test LLM (written to ``scratch``)."""
    from transformers import AutoTokenizer

    from .loading import _llm

    llm, tokenizer = _llm(name, dtype)
    if not isinstance(llm, str):  # the tiny test LLM, made in memory
        llm.save_pretrained(scratch / "llm")
        return scratch / "llm", tokenizer
    folder = Path(llm)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(llm, allow_patterns=_HUB_FILES))
    return folder, AutoTokenizer.from_pretrained(folder)


def _llm_skeleton(folder: Path, dtype: torch.dtype | None, attention: str | None) -> Any:
    """The causal LM of ``folder`` on the meta device, except its input and output
    embeddings, which are read from the checkpoint (``build_vlm`` resizes them)."""
    config = AutoConfig.from_pretrained(folder)
    kwargs = {"attn_implementation": attention} if attention else {}
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32, **kwargs)
    names = {id(p): n for n, p in llm.named_parameters()}  # a tied weight: its first name
    embeddings = [
        m for m in (llm.get_input_embeddings(), llm.get_output_embeddings()) if m is not None
    ]
    wanted: dict[str, Any] = {}
    for module in embeddings:  # tied: one weight, set on the input embeddings
        wanted.setdefault(names[id(module.weight)], module)
    files = revert_weight_conversion(llm, {n: torch.empty(0) for n in wanted})
    by_file = dict(zip(files, wanted, strict=True))  # renaming only: one file key per weight
    for key, tensor in read_tensors(folder, lambda k: k in by_file):
        module = wanted[by_file[key]]
        module.weight = torch.nn.Parameter(tensor.to(module.weight.dtype), requires_grad=True)
    if config.get_text_config().tie_word_embeddings and llm.get_output_embeddings() is not None:
        llm.get_output_embeddings().weight = llm.get_input_embeddings().weight
    if llm.get_input_embeddings().weight.device.type == "meta":
        raise ValueError(f"{folder}: the input embeddings are not in its checkpoint files")
    with suppress(OSError):  # no generation_config.json: the one derived from the config stays
        llm.generation_config = GenerationConfig.from_pretrained(folder)
    return llm


def save_in_dtype(
    model: Any,
    folder: str | Path,
    *,
    source: str | Path,
    trained: set[str],
    dtype: torch.dtype,
    main: bool,
) -> None:
    """Save a DeepSpeed-trained ``model`` (plain, not PEFT) into ``folder`` with every weight in
    ``dtype``: the modules named in ``trained`` (attribute names: ``vision_tower``,
    ``projector``, ``language_model``) from the optimizer's float32 master weights, gathered
    one parameter at a time (every rank must call this: under ZeRO-3 each gather is a
    collective), the others copied from ``source``'s files. Only ``main`` writes; it holds at
    most one shard's tensors."""
    from deepspeed.utils import safe_get_full_fp32_param

    folder = Path(folder)
    writer = None
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        remove_weights(folder)  # an earlier save's files would mix into the index
        writer = ShardWriter(folder)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    group: dict[str, torch.Tensor] = {}  # one layer's tensors: the key conversion may merge them

    def flush() -> None:
        if writer is not None:
            for key, tensor in revert_weight_conversion(model, group).items():
                writer.add(key, tensor)
        group.clear()

    def put(name: str, value: torch.Tensor) -> None:
        if group and _layer(name) != _layer(next(iter(group))):
            flush()
        if writer is not None and name not in tied:
            value = value.to("cpu", dtype) if value.is_floating_point() else value.to("cpu")
            group[name] = value

    def in_trained(name: str) -> bool:
        return name.split(".", 1)[0] in trained

    params = dict(model.named_parameters())
    persistent = set(model.state_dict(keep_vars=True)) - set(params)  # buffers saved
    tensors = [(n, p, True) for n, p in params.items()]
    tensors += [(n, b, False) for n, b in model.named_buffers() if n in persistent]
    for name, tensor, is_param in sorted(tensors, key=lambda item: _layer(item[0])):
        if in_trained(name):
            full = safe_get_full_fp32_param(tensor) if is_param else None
            put(name, tensor.detach() if full is None else full)
    flush()
    if writer is None:
        return
    for key, tensor in read_tensors(source, lambda k: not in_trained(k)):
        writer.add(key, tensor.to(dtype) if tensor.is_floating_point() else tensor)
    writer.close()
    config = copy.deepcopy(model.config)
    config.dtype = dtype  # what from_pretrained(dtype="auto") loads
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)


def _layer(name: str) -> str:
    """The name up to its first numeric part (``...layers.3``): the tensors a weight
    conversion may combine live in one layer."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]
