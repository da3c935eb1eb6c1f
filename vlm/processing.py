"""``VLMProcessor``: conversations + images -> input_ids, attention_mask, labels, pixel_values.

    >>> proc = VLMProcessor(tokenizer, encoder.image_processor, TokenCompressor("tome", 64))
    >>> chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]},
    ...         {"role": "assistant", "content": "A cat."}]
    >>> batch = proc(images=[[cat]], conversations=[chat])                 # training: + labels
    >>> batch = proc(images=[cat], conversations=chat[:1], add_generation_prompt=True)

Text comes from the TOKENIZER'S OWN chat template, never a hand-written one (``vlm.chat``
renders it and locates the labels). List content is flattened to a string first (text parts as
they are, each image part as ``image_token``, joined by ``part_separator``); LLaVA-style
``<image>`` markers inside strings are images too. The text is tokenised ONCE with one
``image_token`` id per image; each is then replaced on the id list by ``[image_start] + N x
image_token + [image_end]``, N = ``compressor.num_output_tokens(H/p, W/p)`` for that image's
processed size: nothing is re-tokenised, so no "tokenization mismatch".

Tiling (``tiling=``, ``encoder.tiling.Tiling``): each image is cut into InternVL-style tiles
(rows*cols in raster order, then a thumbnail) and every tile is one row of ``pixel_values``,
compressed by the model on its own; the image's N is the sum over its tiles, in one span (no
separators between tiles: the tiles' order is fixed by the layout, as in InternVL).

Labels: -100 everywhere except each assistant reply and the end-of-turn token closing it,
located through the template (it must be prefix-stable, else ``ChatTemplateError``); see
``vlm.chat``. With labels, a special token typed inside a message's text ("<|im_end|>") is a
``SpecialTokenInTextError``: the tokenizer would read it as the token and cut the labels.
Without labels (generation prompts) such text is tokenised as the tokenizer always does. Images are only allowed in user messages, so never labelled.

Not a ``transformers.ProcessorMixin``: it requires ``image_processor`` to be a transformers
``ImageProcessingMixin`` (ours is a frozen dataclass) and loads sub-processors via the Auto
classes. Same surface (``__call__(images=, text=)``, ``apply_chat_template``, ``decode`` /
``batch_decode``, ``save_pretrained`` / ``from_pretrained``); processor_config.json names
``processor_class``, so ``AutoProcessor`` loads it after ``AutoProcessor.register(VLMConfig,
VLMProcessor)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase
from transformers.utils import cached_file

from encoder.image_processing import ImageProcessor, batch_pixels
from encoder.tiling import Tiling, tile_images
from token_merge import TokenCompressor

from .chat import (
    IGNORE_INDEX,
    ChatTemplateError,
    Conversation,
    SpecialTokenInTextError,
    encode_chat,
    flatten_conversation,
    refuse_special_tokens,
    render_chat,
)
from .processing_batch import (
    ImageTokenIds,
    Row,
    SampleTooLongError,
    as_batch,
    expand_images,
    fit_max_length,
    images_per_sample,
    is_conversation,
    pad_rows,
    padded_length,
)

__all__ = [
    "IGNORE_INDEX",
    "ChatTemplateError",
    "SampleTooLongError",
    "SpecialTokenInTextError",
    "VLMProcessor",
]

PROCESSOR_CONFIG = "processor_config.json"
PADDING = (True, False, "longest", "max_length")
_TOKEN_FIELDS = ("image_token", "image_start_token", "image_end_token", "part_separator")
_NO_LIMIT = 10**15  # transformers' "no model_max_length" is int(1e30)
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "revision", "subfolder", "token")


class VLMProcessor:
    """Image processor + tokenizer (with its chat template) + the token budget per image.

    tokenizer:       a transformers tokenizer with a chat template. Missing image tokens are
                     added to it IN PLACE as special tokens; ``new_token_ids`` lists them (the
                     model resizes its embeddings to ``len(tokenizer)``).
    image_processor: the encoder's ``ImageProcessor`` (or its ``to_dict()``).
    compressor:      a ``TokenCompressor`` (or its settings): N placeholders per image.
    image_token:     placeholder repeated N times per image; also the marker users write.
    image_start_token / image_end_token: optional tokens around each image's placeholders.
    part_separator:  joins the parts of list content (LLaVA's "<image>\\nquestion").
    tiling:          None, or a ``Tiling`` (or its dict): images become tiles of
                     ``tile_size`` px (None: the image processor's resolution).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor | dict[str, Any],
        compressor: TokenCompressor | dict[str, Any],
        *,
        image_token: str = "<image>",
        image_start_token: str | None = None,
        image_end_token: str | None = None,
        part_separator: str = "\n",
        tiling: Tiling | dict[str, Any] | None = None,
    ) -> None:
        if isinstance(image_processor, dict):
            image_processor = ImageProcessor.from_dict(image_processor)
        if isinstance(compressor, dict):
            compressor = TokenCompressor.from_settings(compressor)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.compressor, self.part_separator = compressor, part_separator
        self.image_token, self.image_start_token = image_token, image_start_token
        self.image_end_token = image_end_token
        self.tiling = Tiling.from_value(tiling)
        if self.tiling is not None:
            self.tiling = self.tiling.fitted(image_processor)
            self.num_image_tokens(self.tiling.size, self.tiling.size)  # the budget fits a tile
        wanted = [t for t in (image_token, image_start_token, image_end_token) if t is not None]
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"the image token strings must all differ; got {wanted}")
        missing = [t for t in wanted if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens(
                {"extra_special_tokens": missing}, replace_extra_special_tokens=False
            )
        self.new_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in missing]
        self.image_token_id, self.image_start_token_id, self.image_end_token_id = (
            None if t is None else self._atomic_id(t)
            for t in (image_token, image_start_token, image_end_token)
        )
        self._ids = ImageTokenIds(
            self.image_token_id,
            [] if image_start_token is None else [self.image_start_token_id],
            [] if image_end_token is None else [self.image_end_token_id],
        )
        ours = {self.image_token_id, *self._ids.start, *self._ids.end}
        # a reply ends at the first special token after it (image tokens excluded)
        added = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self._stop_ids = (added | set(tokenizer.all_special_ids)) - ours
        # their strings: refused inside message text when labelling (``chat``)
        self._special_texts = sorted(
            {t for t in tokenizer.convert_ids_to_tokens(sorted(self._stop_ids)) if t}
        )

    def _atomic_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        ids = self.tokenizer.encode(f"a{token}a", add_special_tokens=False)
        if ids.count(tid) != 1 or tid == self.tokenizer.unk_token_id:
            raise ValueError(
                f"token {token!r} is in the tokenizer's vocabulary but is not one id inside "
                f"text ('a{token}a' -> {ids}); choose another token string"
            )
        return tid

    @property
    def context_length(self) -> int | None:
        """The longest token sequence the LLM takes: ``tokenizer.model_max_length``, which
        ``build_vlm`` caps at the LLM's ``max_position_embeddings`` (saved with the
        tokenizer); None when the tokenizer sets no real limit."""
        length = self.tokenizer.model_max_length
        return length if isinstance(length, int) and 0 < length < _NO_LIMIT else None

    @property
    def patch_size(self) -> int:
        return self.image_processor.patch_size

    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholders (without start/end) for an image processed to height x width pixels."""
        h, w = height // self.patch_size, width // self.patch_size
        try:
            return self.compressor.num_output_tokens(h, w)
        except ValueError as err:
            raise ValueError(
                f"an image processed to {height}x{width} (a {h}x{w} patch grid) cannot be "
                f"compressed by TokenCompressor({self.compressor.extra_repr()}): {err}. Use a "
                "larger image resolution or a smaller token budget."
            ) from err

    def tokens_for_image(self, height: int, width: int) -> int:
        """Placeholders (without start/end) for an image of height x width pixels as given,
        before processing: with tiling, the sum over its tiles."""
        if self.tiling is None:
            return self.num_image_tokens(*self.image_processor.target_size(height, width))
        side = self.tiling.size
        return self.tiling.layout(height, width).num_tiles * self.num_image_tokens(side, side)

    def _pixels(self, images: list[Any]) -> tuple[list[torch.Tensor], list[int]]:
        """Pixel rows for the model ([3, H, W] each: one per image, or with tiling one per
        tile, the images' tiles in order) and each image's placeholder count."""
        if self.tiling is None:
            pixels = self.image_processor(images)
            return pixels, [self.num_image_tokens(*p.shape[-2:]) for p in pixels]
        tiles, layouts = tile_images(images, self.tiling, self.image_processor)
        per_tile = self.num_image_tokens(self.tiling.size, self.tiling.size)
        return tiles, [layout.num_tiles * per_tile for layout in layouts]

    # ------------------------------------------------------------------ main entry

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        *,
        conversations: Conversation | list[Conversation] | None = None,
        add_generation_prompt: bool = False,
        return_labels: bool | None = None,
        padding: bool | str = True,
        padding_side: str | None = None,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Tokenise one sample or a batch and process its images.

        conversations: a conversation (list of {"role", "content"} dicts) or a list of them;
            content is a string or a list of {"type": "text", "text": ...} / {"type": "image"}
            items (an image item may carry its image: "image": PIL / array / file path).
        text:   prompt string(s) with ``image_token`` markers, encoded as they are (with the
            tokenizer's own bos); never labels. Give ``text`` or ``conversations``.
        images: one sample: an image or a list; a batch: one such entry (or None) per sample.
            Matched to the markers in order of appearance.
        add_generation_prompt: end with the assistant header, for generation (no labels).
        return_labels: default True for conversations without a generation prompt.
        padding: True / "longest", "max_length" or False.
        padding_side: "left" / "right"; default: left with ``add_generation_prompt`` (the
            prompts must end where generation starts), else ``tokenizer.padding_side``.
        max_length: longer samples raise ``SampleTooLongError``, unless ``truncation=True`` and
            only text after the last image (and no generation prompt) has to go.

        Returns input_ids, attention_mask, labels (when asked): [B, L] int64; and when the batch
        has N > 0 images, in order of appearance: pixel_values [N, 3, H, W] (a list of
        [3, H_i, W_i] when sizes differ) and image_sizes [N, 2] (processed H, W); with tiling
        N counts tiles (every tile [3, s, s]).
        """
        if (text is None) == (conversations is None):
            raise ValueError("pass exactly one of text= (prompt strings) or conversations=")
        if padding not in PADDING or (padding == "max_length" and max_length is None):
            raise ValueError(f"padding must be one of {PADDING} (max_length needs max_length=)")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None; got {return_tensors!r}")
        chat = conversations is not None
        trainable = chat and not add_generation_prompt
        if return_labels and not trainable:
            raise ValueError("labels need conversations= without add_generation_prompt")
        return_labels = trainable if return_labels is None else return_labels
        samples = as_batch(conversations if chat else text, chat)
        per_sample = images_per_sample(images, len(samples))
        for b, sample in enumerate(samples):
            if chat:
                samples[b], inline, markers = flatten_conversation(
                    sample, b, self.image_token, self.part_separator
                )
                if inline and per_sample[b]:
                    raise ValueError(
                        f"conversation {b} carries images in its items and also got images=; "
                        "give each image once"
                    )
                per_sample[b] = inline or per_sample[b]
                if return_labels:
                    refuse_special_tokens(samples[b], b, self._special_texts)
                if add_generation_prompt and samples[b][-1]["role"] == "assistant":
                    raise ValueError(
                        f"conversation {b} ends with an assistant reply but "
                        "add_generation_prompt=True; drop the reply or the generation prompt"
                    )
            else:
                markers = sample.count(self.image_token)
            if markers != len(per_sample[b]):
                raise ValueError(
                    f"sample {b} has {markers} image markers ({self.image_token!r} or "
                    f"{{'type': 'image'}} items) but {len(per_sample[b])} images were given; "
                    "pass one image per marker, in order of appearance"
                )
        # paths, bytes and PIL images alike go through the encoder's loader (EXIF, strict
        # decoding, pixel limit), the one the training data uses
        flat_images = [image for images_b in per_sample for image in images_b]
        pixels, counts = self._pixels(flat_images) if flat_images else ([], [])
        counts = iter(counts)
        rows: list[Row] = []
        for b, sample in enumerate(samples):
            if chat:
                ids, labels = encode_chat(
                    self.tokenizer,
                    sample,
                    b,
                    image_token=self.image_token,
                    image_token_id=self.image_token_id,
                    stop_ids=self._stop_ids,
                    add_generation_prompt=add_generation_prompt,
                    want_labels=return_labels,
                )
            else:
                # A rendered chat already starts with its bos; plain text gets the tokenizer's.
                bos = self.tokenizer.bos_token
                rendered = bos is not None and sample.startswith(bos)
                ids = self.tokenizer.encode(sample, add_special_tokens=not rendered)
                labels = None
            ids, labels, spans = expand_images(
                ids, labels, [next(counts) for _ in per_sample[b]], b, self.tokenizer, self._ids
            )
            rows.append(
                fit_max_length(ids, labels, spans, b, max_length, truncation, add_generation_prompt)
            )
        if padding_side is None:
            padding_side = "left" if add_generation_prompt else self.tokenizer.padding_side
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
        length = padded_length([len(ids) for ids, _ in rows], padding, max_length, return_tensors)
        data = pad_rows(
            rows, self.tokenizer.pad_token_id, length, return_tensors, left=padding_side == "left"
        )
        if pixels:
            sizes = [tuple(p.shape[-2:]) for p in pixels]
            data["pixel_values"] = batch_pixels(pixels) if return_tensors else pixels
            data["image_sizes"] = torch.tensor(sizes) if return_tensors else sizes
        return BatchFeature(data)

    # ------------------------------------------------------------------ transformers surface

    def apply_chat_template(
        self,
        conversation: Conversation | list[Conversation],
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        images: Any = None,
        **kwargs: Any,
    ) -> str | list[str] | BatchFeature:
        """tokenize=False: the rendered text (one ``image_token`` per image, not expanded); a
        string for one conversation, a list for a batch. tokenize=True: ``self(images=images,
        conversations=conversation, add_generation_prompt=..., **kwargs)``."""
        if tokenize:
            return self(
                images,
                conversations=conversation,
                add_generation_prompt=add_generation_prompt,
                **kwargs,
            )
        single = is_conversation(conversation)
        batch = [conversation] if single else conversation
        texts = []
        for b, c in enumerate(batch):
            messages = flatten_conversation(c, b, self.image_token, self.part_separator)[0]
            texts.append(render_chat(self.tokenizer, messages, add_generation_prompt, b))
        return texts[0] if single else texts

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """``tokenizer.decode``; ``skip_special_tokens=True`` also drops the image tokens."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """``tokenizer.batch_decode``."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_sizes"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings (all but the tokenizer): the content of processor_config.json."""
        return {
            "processor_class": type(self).__name__,
            "image_processor": self.image_processor.to_dict(),
            "compressor": self.compressor.settings(),
            "tiling": None if self.tiling is None else self.tiling.to_dict(),
            **{key: getattr(self, key) for key in _TOKEN_FIELDS},
        }

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> list[str]:
        """Tokenizer files (with its chat template) + processor_config.json; returns the paths.
        ``kwargs`` go to ``tokenizer.save_pretrained``."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        files = [str(f) for f in self.tokenizer.save_pretrained(folder, **kwargs)]
        config = folder / PROCESSOR_CONFIG
        config.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return [*files, str(config)]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, **kwargs: Any
    ) -> VLMProcessor:
        """Inverse of ``save_pretrained``, from a folder or a hub id. ``kwargs`` go to
        ``AutoTokenizer.from_pretrained`` (hub options such as ``revision`` to both reads)."""
        source = str(pretrained_model_name_or_path)
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        path = cached_file(
            source, PROCESSOR_CONFIG, _raise_exceptions_for_missing_entries=False, **hub
        )
        if path is None:
            raise FileNotFoundError(
                f"{source} has no {PROCESSOR_CONFIG}: not saved by VLMProcessor.save_pretrained. "
                "Build one with VLMProcessor(tokenizer, image_processor, compressor)."
            )
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {"processor_class", "auto_map", "image_processor", "compressor", "tiling"}
        known |= set(_TOKEN_FIELDS)
        if unknown := sorted(set(config) - known):
            raise ValueError(f"unknown keys {unknown} in {path}; known: {sorted(known)}")
        tokens = {key: config[key] for key in _TOKEN_FIELDS if key in config}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        images, compressor = config["image_processor"], config["compressor"]
        return cls(tokenizer, images, compressor, tiling=config.get("tiling"), **tokens)

    def __repr__(self) -> str:
        settings = {k: v for k, v in self.to_dict().items() if k != "processor_class"}
        return f"{type(self).__name__}(tokenizer={type(self.tokenizer).__name__}, {settings})"
