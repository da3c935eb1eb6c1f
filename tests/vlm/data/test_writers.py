"""write_llava: a lossless round trip through LlavaSource."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlm.chat import flatten_conversation
from vlm.data import LlavaSource, SynthDocConfig, generate_records, to_messages, write_llava


@pytest.fixture(scope="module")
def records():
    return list(generate_records(18, SynthDocConfig(image_size=64, seed=5)))


def test_llava_round_trip_gives_the_same_messages(records, tmp_path):
    path = write_llava(records, tmp_path)
    entries = json.loads(path.read_text())
    assert entries[0]["conversations"][0]["value"].startswith("<image>\n")
    source = LlavaSource(path)
    assert len(source) == len(records)
    for i, record in enumerate(records):
        sample = source[i]
        assert sample["id"] == record.id
        assert sample["images"] == [tmp_path / "images" / f"{record.id}.png"]
        # the processor flattens image items to "<image>" + "\n" + text: the same string
        ours = flatten_conversation(to_messages(record), 0, "<image>", "\n")[0]
        theirs = flatten_conversation(sample["messages"], 0, "<image>", "\n")[0]
        assert ours == theirs
        assert np.array_equal(np.asarray(record.image), np.asarray(_open(sample["images"][0])))


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
