"""VLMDataset on a bad-input corpus built here: nothing crashes, nothing vanishes silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from image_kit import encoded, exif_rotated_jpeg, noise
from PIL import Image
from torch.utils.data import DataLoader

from encoder.image_processing import ImageProcessor
from token_merge import TokenCompressor
from vlm.data import (
    DataConfig,
    LlavaSource,
    SkipReport,
    SkipReportCallback,
    VLMCollator,
    VLMDataset,
    build_dataset,
)
from vlm.data.images import fit_budget, open_image
from vlm.data.skips import SkipSample
from vlm.processing import VLMProcessor
from vlm.tiny import tiny_tokenizer

MAX_LENGTH = 96


def processor(num_tokens: int = 4) -> VLMProcessor:
    return VLMProcessor(
        tiny_tokenizer("chatml"),
        ImageProcessor(patch_size=16, resolution=64, max_resolution=512),
        TokenCompressor("tome", num_tokens=num_tokens),
    )


# id -> (file content, or None for no file | the expected outcome: None = returned, else reason)
FILES = {
    "good": (encoded(noise(48, 64), "PNG"), None),
    "cmyk": (encoded(Image.new("CMYK", (40, 30), (10, 200, 30, 0)), "JPEG"), None),
    "sixteen": (encoded(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG"), None),
    "rgba": (encoded(Image.new("RGBA", (40, 30), (255, 0, 0, 128)), "PNG"), None),
    "grey": (encoded(Image.new("L", (40, 30), 128), "PNG"), None),
    "tiny": (encoded(Image.new("RGB", (1, 1), "blue"), "PNG"), None),
    "wide": (encoded(Image.new("RGB", (20000, 10), "green"), "PNG"), None),
    "exif": (exif_rotated_jpeg(), None),
    "missing": (None, "missing_image"),
    "corrupt": (b"this is not an image at all", "corrupt_image"),
    "trunc_png": (encoded(noise(64, 64, 1), "PNG")[:2000], "truncated_image"),
    "trunc_jpeg": (encoded(noise(64, 64, 2), "JPEG")[:700], "truncated_image"),
}
# samples beyond one-image-per-file: id -> (image paths, conversation, expected outcome)
OTHERS = {
    "text_only": ([], [("human", "Say hi."), ("gpt", "answer text_only")], None),
    "two_markers": (
        ["good.png"],
        [("human", "<image>\n<image>\nBoth?"), ("gpt", "x")],
        "image_count_mismatch",
    ),
    "empty": ([], [], "empty_conversation"),
    "blank": ([], [("human", "  "), ("gpt", "")], "empty_conversation"),
    "no_reply": (["good.png"], [("human", "<image>\nHello?")], "no_assistant_reply"),
    "too_long": (
        ["good.png"],
        [("human", "<image>\nTell me."), ("gpt", "word " * 300)],
        "too_long",
    ),
    "escape": (
        ["../outside.png"],
        [("human", "<image>\nWhat?"), ("gpt", "x")],
        "path_escapes_root",
    ),
    "bad_role": ([], [("robot", "beep"), ("gpt", "x")], "malformed_sample"),
    "typed_eot": (
        ["good.png"],
        [("human", "<image>\nHow do turns end?"), ("gpt", "With <|im_end|> like this.")],
        "special_token_in_text",
    ),
}


def write_corpus(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    noise(32, 32).save(tmp_path / "outside.png")  # exists, but outside the root
    entries, expected = [], {}
    for name, (content, outcome) in FILES.items():
        if content is not None:
            (root / f"{name}.bin").write_bytes(content)
        entries.append(
            {
                "id": name,
                "image": f"{name}.bin",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is it?"},
                    {"from": "gpt", "value": f"answer {name}"},
                ],
            }
        )
        expected[name] = outcome
    for name, (images, turns, outcome) in OTHERS.items():
        entry = {"id": name, "conversations": [{"from": f, "value": v} for f, v in turns]}
        if images:
            entry["image"] = images if len(images) > 1 else images[0]
        entries.append(entry)
        expected[name] = outcome
    (root / "good.png").write_bytes(FILES["good"][0])
    path = tmp_path / "data.json"
    path.write_text(json.dumps(entries))
    return path, root, expected


def answers_in(batch, tokenizer) -> list[str]:
    out = []
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        out.append(tokenizer.decode(ids[labels != -100]))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_the_bad_input_corpus_runs_through_and_every_sample_is_accounted_for(tmp_path, workers):
    path, root, expected = write_corpus(tmp_path)
    proc = processor()
    report = SkipReport(tmp_path / "skips")
    dataset = VLMDataset(LlavaSource(path, root), proc, max_length=MAX_LENGTH, report=report)
    collator = VLMCollator(proc.tokenizer.pad_token_id)
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collator)
    seen, items = set(), 0
    for batch in loader:
        items += len(batch["input_ids"])
        if "pixel_values" in batch:
            assert (
                len(batch["image_sizes"])
                == int((batch["input_ids"] == proc.image_token_id).sum()) // 4
            )
        for text in answers_in(batch, proc.tokenizer):
            seen.add(text.removeprefix("answer ").split("<|im_end|>")[0])
    assert items == len(dataset)  # a skipped index yields the next usable sample
    good = {name for name, outcome in expected.items() if outcome is None}
    assert seen == good  # every usable sample came back (text_only included)
    summary = report.summary()
    skipped = {s["id"]: s["reason"] for s in summary["samples"]}
    assert skipped == {name: outcome for name, outcome in expected.items() if outcome}
    handled = summary["handled"]
    assert set(handled["converted_mode"]["ids"]) == {"cmyk", "sixteen", "rgba", "grey"}
    assert handled["padded_aspect"]["ids"] == ["wide"]
    assert handled["exif_transposed"]["ids"] == ["exif"]
    table = report.table()
    for reason in set(skipped.values()):
        assert f"| skipped | {reason} |" in table


def test_converted_images_have_the_expected_pixels(tmp_path):
    _, root, _ = write_corpus(tmp_path)
    note = []

    def load(name):
        return np.asarray(open_image(root / f"{name}.bin", lambda *a: note.append(a)))

    assert load("rgba")[0, 0].tolist() == [255, 127, 127]  # half red over white
    assert load("sixteen")[0, 0].tolist() == [156, 156, 156]  # 40000 / 65535 * 255
    assert load("exif").shape == (40, 20, 3)  # stored 20x40 (HxW), turned upright
    assert ("exif_transposed", "orientation 6") in note


def test_extreme_sizes_are_padded_to_fit_the_token_budget():
    proc = processor(num_tokens=16)  # needs a 4x4 patch grid at least
    notes = []
    dataset = VLMDataset(_One(Image.new("RGB", (20000, 10), "red")), proc)
    sample = dataset[0]
    assert dataset.report.summary()["skipped_samples"] == 0
    assert sample["image_sizes"].tolist() == [[64, 64]]  # padded to square, then resized
    assert [n["id"] for n in dataset.report.entries()] == ["one"] * 2
    assert {n["reason"] for n in dataset.report.entries()} == {"padded_aspect", "padded_small"}
    tiny = fit_budget(
        Image.new("RGB", (1, 1)), lambda h, w: h * w >= 900, None, 1024, lambda *a: notes.append(a)
    )
    assert tiny.size == (32, 32) and notes[-1] == ("padded_small", "1x1 -> 32x32 (WxH)")
    with pytest.raises(SkipSample, match="image_too_small"):
        fit_budget(Image.new("RGB", (1, 1)), lambda h, w: False, None, 64, lambda *a: None)


def test_decompression_bombs_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    (tmp_path / "bomb.png").write_bytes(encoded(noise(48, 64), "PNG"))
    with pytest.raises(SkipSample, match="image_too_large"):
        open_image(tmp_path / "bomb.png", lambda *a: None, max_pixels=None)


def test_broken_data_stops_with_the_report(tmp_path):
    entries = [{"id": f"e{i}", "image": "nope.png", "conversations": []} for i in range(5)]
    (tmp_path / "d.json").write_text(json.dumps(entries))
    dataset = VLMDataset(LlavaSource(tmp_path / "d.json"), processor())
    with pytest.raises(RuntimeError, match="5 samples in a row"):
        dataset[2]


def test_lengths_estimate_the_real_lengths_without_loading_images(monkeypatch):
    config = DataConfig(kind="synthdoc", num_samples=12, synthdoc={"image_size": 64})
    dataset = build_dataset(config, processor())
    monkeypatch.setattr(dataset.source, "__getitem__", None)  # describe() must not draw
    lengths = dataset.lengths
    monkeypatch.undo()
    real = [len(dataset[i]["input_ids"]) for i in range(12)]
    assert all(abs(a - b) <= 3 for a, b in zip(lengths, real, strict=True)), (lengths, real)
    sampler = dataset.length_grouped_sampler(4, torch.Generator().manual_seed(0))
    assert sorted(sampler) == list(range(12))


def test_hf_folders_and_parquet_with_question_answer_columns(tmp_path):
    import datasets

    images = [encoded(noise(40, 40, i), "PNG") for i in range(3)]
    images[1] = b"corrupt bytes"
    table = datasets.Dataset.from_dict(
        {
            "img": [{"bytes": b, "path": None} for b in images],
            "q": ["A?", "B?", "C?"],
            "a": [["one"], ["two"], ["three"]],
        },
        features=datasets.Features(
            {
                "img": datasets.Image(),
                "q": datasets.Value("string"),
                "a": datasets.Sequence(datasets.Value("string")),
            }
        ),
    )
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "data.parquet"))
    columns = {"image": "img", "conversations": None, "question": "q", "answer": "a"}
    proc = processor()
    for path in ("saved", "data.parquet"):
        config = DataConfig(
            kind="hf",
            path=str(tmp_path / path),
            columns=columns,
            skip_report_dir=str(tmp_path / f"skips-{path}"),
        )
        dataset = build_dataset(config, proc)
        got = [
            proc.tokenizer.decode(dataset[i]["labels"][dataset[i]["labels"] != -100])
            for i in range(3)
        ]
        assert [g.split("<")[0] for g in got] == ["one", "three", "three"]
        assert dataset.report.summary()["samples"][0]["reason"] == "corrupt_image"
    stream = build_dataset(
        DataConfig(kind="hf", path=str(tmp_path / "saved"), streaming=True, columns=columns), proc
    )
    assert len(list(stream)) == 2 and stream.report.summary()["skipped_samples"] == 1


def test_the_callback_prints_and_saves_the_summary(tmp_path, capsys):
    from types import SimpleNamespace

    report = SkipReport(tmp_path / "skips")
    report.add("s1", "corrupt_image", "bad bytes")
    report.add("s1", "corrupt_image", "bad bytes")  # seen again next epoch
    report.add("s2", "too_long", "300 tokens")
    callback = SkipReportCallback(report)
    args = SimpleNamespace(output_dir=str(tmp_path / "run"))
    state = SimpleNamespace(is_world_process_zero=True, epoch=1.0)
    callback.on_epoch_end(args, state, control=None)
    printed = capsys.readouterr().out
    assert (
        "skipped samples (epoch 1): 2" in printed
        and "| skipped | corrupt_image | 1 | 2 |" in printed
    )
    saved = json.loads((tmp_path / "run" / "skip_report.json").read_text())
    assert saved["skipped"]["too_long"]["ids"] == ["s2"]


class _One:
    """A source with one sample: an image + a question."""

    def __init__(self, image):
        self.image = image

    def __len__(self):
        return 1

    def __getitem__(self, index):
        messages = [
            {"role": "user", "content": "<image>\nWhat?"},
            {"role": "assistant", "content": "red"},
        ]
        return {"id": "one", "images": [self.image], "messages": messages}

    def sample_id(self, index):
        return "one"


def test_symlinks_are_followed_only_inside_the_image_root(tmp_path):
    real_root = tmp_path / "disk" / "images"
    real_root.mkdir(parents=True)
    noise(32, 32, 1).save(tmp_path / "secret.png")  # outside the root
    noise(32, 32, 2).save(real_root / "a.png")
    (real_root / "out.png").symlink_to(tmp_path / "secret.png")
    (real_root / "outdir").symlink_to(tmp_path, target_is_directory=True)
    (real_root / "in.png").symlink_to(real_root / "a.png")
    root = tmp_path / "root"
    root.symlink_to(real_root, target_is_directory=True)  # a linked root is fine
    names = ["a.png", "in.png", "out.png", "outdir/secret.png"]
    entries = [
        {
            "id": name,
            "image": name,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat?"},
                {"from": "gpt", "value": f"answer {name}"},
            ],
        }
        for name in names
    ]
    (tmp_path / "d.json").write_text(json.dumps(entries))
    dataset = VLMDataset(LlavaSource(tmp_path / "d.json", root), processor())
    for i in range(len(names)):
        dataset[i]
    skipped = {s["id"]: (s["reason"], s["detail"]) for s in dataset.report.summary()["samples"]}
    assert set(skipped) == {"out.png", "outdir/secret.png"}
    for name in ("out.png", "outdir/secret.png"):
        reason, detail = skipped[name]
        assert reason == "path_escapes_root"
        assert f"leading outside {root}" in detail and str(tmp_path / "secret.png") in detail


def test_samples_sharing_an_id_are_each_counted(tmp_path):
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}]
    entries = [
        {"id": "same", "image": "nope1.png", "conversations": turns},
        {"id": "same", "image": "nope2.png", "conversations": turns},
        {"id": "same", "image": "cmyk.jpg", "conversations": turns},
        {"id": "same", "image": "cmyk.jpg", "conversations": turns},
        {"id": "ok", "conversations": [{"from": "human", "value": "Hi"}, turns[1]]},
    ]
    Image.new("CMYK", (40, 30)).save(tmp_path / "cmyk.jpg")
    (tmp_path / "d.json").write_text(json.dumps(entries))
    report = SkipReport(tmp_path / "skips")
    for _epoch in range(2):  # the second pass sees the same samples again: not new ones
        dataset = VLMDataset(LlavaSource(tmp_path / "d.json"), processor(), report=report)
        for i in range(len(entries)):
            dataset[i]
    summary = report.summary()
    assert summary["skipped_samples"] == 2
    group = summary["skipped"]["missing_image"]
    assert (group["samples"], group["occurrences"]) == (2, 4)
    assert sorted((s["id"], s["index"]) for s in summary["samples"]) == [("same", 0), ("same", 1)]
    assert summary["handled"]["converted_mode"]["samples"] == 2
    assert "| skipped | missing_image | 2 | 4 |" in report.table()


def test_max_length_defaults_to_the_llms_context_and_longer_samples_are_skipped():
    def long_sample(words: int) -> _Texts:
        return _Texts(["short", "word " * words])

    proc = processor()
    assert proc.context_length == 4096  # the tiny tokenizer's model_max_length
    proc.tokenizer.model_max_length = 64  # a 64-token LLM
    dataset = VLMDataset(long_sample(100), proc)
    assert len(dataset[1]["input_ids"]) <= 64  # index 1 is too long: index 0 comes instead
    [skip] = dataset.report.summary()["samples"]
    assert skip["reason"] == "too_long"
    assert "more than max_length=64 (data.max_length is null: the LLM's context" in skip["detail"]
    explicit = VLMDataset(long_sample(100), proc, max_length=400)  # an explicit value wins
    assert len(explicit[1]["input_ids"]) > 64 and not explicit.report.entries()
    proc.tokenizer.model_max_length = int(1e30)  # transformers' "no limit"
    assert proc.context_length is None
    unlimited = VLMDataset(long_sample(100), proc)
    assert len(unlimited[1]["input_ids"]) > 64 and not unlimited.report.entries()


class _Texts:
    """A source of text-only samples, one per reply."""

    def __init__(self, replies):
        self.replies = replies

    def __len__(self):
        return len(self.replies)

    def __getitem__(self, index):
        messages = [
            {"role": "user", "content": "Say it."},
            {"role": "assistant", "content": self.replies[index]},
        ]
        return {"id": f"t{index}", "images": [], "messages": messages}
