"""VLMProcessor: chat rendering via the tokenizer's template, labels, image placeholders."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from encoder.image_processing import ImageProcessor
from token_merge import TokenCompressor
from vlm.processing import (
    ChatTemplateError,
    SampleTooLongError,
    SpecialTokenInTextError,
    VLMProcessor,
)
from vlm.tiny import tiny_tokenizer

EOT = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
SYSTEM = "Answer in one short sentence."
REPLIES = ["A red car is parked next to a tree.", "There are 3 people.", "The answer is 42."]


def make(template="chatml", compressor=None, start_end=True, **tok_kwargs) -> VLMProcessor:
    return VLMProcessor(
        tiny_tokenizer(template, **tok_kwargs),
        ImageProcessor(patch_size=16, resolution=64, max_resolution=512),
        compressor or TokenCompressor("tome", num_tokens=4),
        image_start_token="<img>" if start_end else None,
        image_end_token="</img>" if start_end else None,
    )


def image(w=64, h=48, color="red") -> Image.Image:
    return Image.new("RGB", (w, h), color)


def chat(num_images: int, system: bool = True) -> list[dict]:
    """Three user/assistant rounds; images spread over the user turns (list items and markers)."""
    first = [{"type": "image"}] * min(num_images, 1) + [{"type": "text", "text": "What is this?"}]
    second = "<image>\nHow many people?" if num_images >= 2 else "How many people?"
    turns = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": REPLIES[0]},
        {"role": "user", "content": second},
        {"role": "assistant", "content": REPLIES[1]},
        {"role": "user", "content": "And the answer?"},
        {"role": "assistant", "content": REPLIES[2]},
    ]
    return ([{"role": "system", "content": SYSTEM}] if system else []) + turns


def labelled_runs(proc: VLMProcessor, ids: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Decode every contiguous run of positions whose label is not -100."""
    mask = labels != -100
    assert torch.equal(labels[mask], ids[mask])
    runs, current = [], []
    for k in range(len(ids)):
        if mask[k]:
            current.append(int(ids[k]))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [proc.decode(run) for run in runs]


@pytest.mark.parametrize("template", ["chatml", "llama3"])
@pytest.mark.parametrize("num_images", [0, 1, 2])
def test_labels_are_exactly_the_replies_and_their_end_of_turn(template, num_images):
    proc = make(template)
    images = [image(), image(48, 64, "blue")][:num_images]
    for system in (True, False):
        out = proc(images=images, conversations=chat(num_images, system))
        runs = labelled_runs(proc, out["input_ids"][0], out["labels"][0])
        assert runs == [reply + EOT[template] for reply in REPLIES]
        assert int((out["input_ids"][0] == proc.image_token_id).sum()) == 4 * num_images
        assert ("pixel_values" in out) == (num_images > 0)


def test_default_system_prompt_of_the_template_is_rendered_and_not_labelled():
    proc = make("chatml", default_system_prompt="You are a helpful assistant.")
    out = proc(images=[image()], conversations=chat(1, system=False))
    text = proc.decode(out["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    runs = labelled_runs(proc, out["input_ids"][0], out["labels"][0])
    assert runs == [reply + "<|im_end|>" for reply in REPLIES]


def test_rendering_uses_the_tokenizers_template_with_one_bos():
    proc = make("llama3")
    text = proc.apply_chat_template(chat(2)[:3])
    assert text == proc.tokenizer.apply_chat_template(
        [
            {**m, "content": c}
            for m, c in zip(
                chat(2)[:3], [SYSTEM, "<image>\nWhat is this?", REPLIES[0]], strict=True
            )
        ],
        tokenize=False,
    )
    out = proc(images=[image()], conversations=chat(1)[:2], add_generation_prompt=True)
    assert "labels" not in out
    ids = out["input_ids"][0].tolist()
    assert ids.count(proc.tokenizer.bos_token_id) == 1 and ids[0] == proc.tokenizer.bos_token_id
    assert proc.decode(ids).endswith(
        "What is this?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_image_span_is_start_k_placeholders_end_and_new_tokens_are_reported():
    proc = make("chatml", TokenCompressor("tome", num_tokens=5))
    assert len(proc.new_token_ids) == 3 and len(proc.tokenizer) == max(proc.new_token_ids) + 1
    out = proc(images=[image(64, 32), image(32, 64)], conversations=chat(2))
    ids = out["input_ids"][0].tolist()
    start = ids.index(proc.image_start_token_id)
    assert ids[start : start + 7] == [proc.image_start_token_id] + [proc.image_token_id] * 5 + [
        proc.image_end_token_id
    ]
    assert ids.count(proc.image_start_token_id) == ids.count(proc.image_end_token_id) == 2
    assert isinstance(out["pixel_values"], list)  # two sizes: not stackable
    assert out["image_sizes"].tolist() == [[32, 64], [64, 32]]
    assert "<image>" not in proc.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize(
    "compressor",
    [TokenCompressor("unshuffle", scale=2), TokenCompressor("none")],
    ids=["unshuffle", "none"],
)
def test_placeholders_follow_each_images_size(compressor):
    proc = make("llama3", compressor, start_end=False)
    imgs = [image(64, 32), image(48, 64), image(64, 64)]  # PIL sizes are (w, h)
    out = proc(images=[imgs[:2], imgs[2:]], conversations=[chat(2), chat(1)])
    assert out["image_sizes"].tolist() == [[32, 64], [64, 48], [64, 64]]
    want = [compressor.num_output_tokens(h // 16, w // 16) for h, w in out["image_sizes"].tolist()]
    assert len(set(want)) > 1  # the count depends on the size
    counts = (out["input_ids"] == proc.image_token_id).sum(dim=1).tolist()
    assert counts == [want[0] + want[1], want[2]]
    ids = out["input_ids"][0].tolist()
    first = ids.index(proc.image_token_id)  # the first image's run is exactly want[0] long
    assert ids[first : first + want[0]] == [proc.image_token_id] * want[0]
    assert ids[first + want[0]] != proc.image_token_id


def test_marker_and_image_count_mismatches_name_both_counts():
    proc = make()
    with pytest.raises(ValueError, match=r"2 image markers .* but 1 images were given"):
        proc(images=[image()], conversations=chat(2))
    with pytest.raises(ValueError, match=r"0 image markers .* but 1 images were given"):
        proc(images=[image()], conversations=chat(0))
    with pytest.raises(ValueError, match=r"1 image markers .* but 0 images"):
        proc(text="<image> describe")
    with pytest.raises(ValueError, match="images has 3 entries for 2 samples"):
        proc(images=[image()] * 3, conversations=[chat(1), chat(1)])
    bad = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Look: <image>"}]
    with pytest.raises(ValueError, match="only allowed in user messages"):
        proc(images=[image()], conversations=bad)
    with pytest.raises(ValueError, match="conversation 1 is empty"):
        proc(conversations=[chat(0), []])
    with pytest.raises(ValueError, match="ends with an assistant reply"):
        proc(conversations=chat(0), add_generation_prompt=True)
    with pytest.raises(ValueError, match=r"processed to 16x64 \(a 1x4 patch grid\) cannot be"):
        make(compressor=TokenCompressor("tome", num_tokens=5))(images=image(64, 8), text="<image>")
    with pytest.raises(ValueError, match="contains '<img>' in its text"):
        proc(conversations=[{"role": "user", "content": "<img> hi"}])


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_a_special_token_typed_in_a_message_never_ends_the_labels(template):
    """Today's tokenizers read "<|im_end|>" in text as the token itself: a reply holding it
    would be labelled only up to there. With labels, such a sample is refused instead."""
    proc = make(template)
    token = EOT[template]
    typed = f"Type {token} to end a turn."
    for role in ("assistant", "user"):
        conversation = chat(0)
        at = 2 if role == "assistant" else 1  # the first reply / the first question
        conversation[at] = {"role": role, "content": typed}
        with pytest.raises(SpecialTokenInTextError) as info:
            proc(conversations=conversation)
        message = str(info.value)
        assert f"conversation 0, message {at} ({role}) contains {token!r}" in message
    # the same text with labels off (a prompt for generation) is tokenised as it always was
    prompt = proc(conversations=[{"role": "user", "content": typed}], add_generation_prompt=True)
    assert proc.tokenizer.convert_tokens_to_ids(token) in prompt["input_ids"][0].tolist()
    # the image token in text is a marker, not this error
    assert "labels" in proc(images=[image(), image()], conversations=chat(2))


def test_inline_images_and_text_prompts():
    proc = make("llama3")
    inline = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image()}, {"type": "text", "text": "Hi"}],
        }
    ]
    a = proc(conversations=inline, add_generation_prompt=True)
    b = proc(
        images=[image()],
        conversations=[{"role": "user", "content": "<image>\nHi"}],
        add_generation_prompt=True,
    )
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "pixel_values"))
    out = proc(images=[[image()], None], text=["<image>\nA photo of", "No image here"])
    assert "labels" not in out and out["pixel_values"].shape == (1, 3, 48, 64)
    assert (
        out["input_ids"][:, 0].tolist() == [proc.tokenizer.bos_token_id] * 2
    )  # the tokenizer's bos


def test_truncation_never_cuts_an_image():
    proc = make("chatml")
    conversation = chat(1)[:3]
    full = proc(images=[image()], conversations=conversation)
    length = full["input_ids"].shape[1]
    last_image_end = full["input_ids"][0].tolist().index(proc.image_end_token_id) + 1
    with pytest.raises(
        SampleTooLongError,
        match=rf"has {length} tokens, more than max_length=10.*end at token {last_image_end}",
    ):
        proc(images=[image()], conversations=conversation, max_length=10, truncation=True)
    with pytest.raises(SampleTooLongError, match="pass truncation=True"):
        proc(images=[image()], conversations=conversation, max_length=length - 3)
    cut = proc(images=[image()], conversations=conversation, max_length=length - 3, truncation=True)
    assert torch.equal(cut["input_ids"], full["input_ids"][:, : length - 3])
    assert torch.equal(cut["labels"], full["labels"][:, : length - 3])
    just = proc(
        images=[image()], conversations=conversation, max_length=last_image_end, truncation=True
    )
    assert just["input_ids"].shape[1] == last_image_end
    prompt = chat(1)[:2]
    n = proc(images=[image()], conversations=prompt, add_generation_prompt=True)["input_ids"].shape[
        1
    ]
    with pytest.raises(SampleTooLongError, match="generation prompt"):
        proc(
            images=[image()],
            conversations=prompt,
            add_generation_prompt=True,
            max_length=n - 1,
            truncation=True,
        )


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_padding_and_attention_mask(side):
    proc = make("llama3")
    proc.tokenizer.padding_side = side
    convs, imgs = (
        [chat(0, False)[:2], chat(2), chat(1)[:3]],
        [None, [image(), image()], [image(32, 64)]],
    )
    out = proc(images=imgs, conversations=convs)
    singles = [proc(images=i, conversations=c) for c, i in zip(convs, imgs, strict=True)]
    width = max(s["input_ids"].shape[1] for s in singles)
    assert (
        out["input_ids"].shape == out["attention_mask"].shape == out["labels"].shape == (3, width)
    )
    for row, single in enumerate(singles):
        n = single["input_ids"].shape[1]
        assert int(out["attention_mask"][row].sum()) == n
        keep = slice(width - n, width) if side == "left" else slice(0, n)
        pad = slice(0, width - n) if side == "left" else slice(n, width)
        assert torch.equal(out["input_ids"][row, keep], single["input_ids"][0])
        assert torch.equal(out["labels"][row, keep], single["labels"][0])
        assert (out["input_ids"][row, pad] == proc.tokenizer.pad_token_id).all()
        assert (out["labels"][row, pad] == -100).all() and (
            out["attention_mask"][row, pad] == 0
        ).all()
    assert out["pixel_values"][0].shape == (3, 48, 64) and len(out["pixel_values"]) == 3
    fixed = proc(images=imgs, conversations=convs, padding="max_length", max_length=width + 5)
    assert fixed["input_ids"].shape == (3, width + 5)


def test_save_and_load_round_trip(tmp_path):
    proc = make("llama3", TokenCompressor("tome", num_tokens=6, stride=(2, 2)))
    proc.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "VLMProcessor" and config["compressor"]["stride"] == [2, 2]
    loaded = VLMProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == proc.to_dict() and loaded.new_token_ids == []
    assert loaded.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
    assert loaded.image_processor == proc.image_processor
    args = {"images": [[image(), image(32, 64)], [image()]], "conversations": [chat(2), chat(1)]}
    a, b = proc(**args), loaded(**args)
    assert a.keys() == b.keys()
    for key in a:
        values = (
            zip(a[key], b[key], strict=True) if isinstance(a[key], list) else [(a[key], b[key])]
        )
        assert all(torch.equal(x, y) for x, y in values)
    config["extra"] = 1
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown keys \['extra'\]"):
        VLMProcessor.from_pretrained(tmp_path)


def test_template_that_is_not_prefix_stable_is_refused():
    proc = make("chatml")
    # renders the last message differently from earlier ones, like templates that drop
    # the reasoning of earlier turns
    proc.tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}>>{% endif %}"
        "{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="not prefix-stable"):
        proc(conversations=chat(0))
    proc.tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="chat template failed"):
        proc(conversations=chat(0))


def test_missing_pad_token_is_named():
    proc = make("chatml")
    proc.tokenizer.pad_token = None
    proc(conversations=chat(0))  # one sample needs no padding
    with pytest.raises(ValueError, match="no pad token"):
        proc(conversations=[chat(0), chat(0)[:3]])
