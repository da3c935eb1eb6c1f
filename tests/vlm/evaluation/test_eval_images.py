"""The eval model loads images as training does: EXIF orientation applied, truncated images
refused although importing lmms-eval switches Pillow's LOAD_TRUNCATED_IMAGES on."""

from __future__ import annotations

import datasets
import pytest
import torch
from image_kit import encoded, exif_rotated_jpeg, noise
from lmms_eval.api.instance import Instance
from PIL import ImageFile

from encoder.image_loading import ImageLoadError
from vlm.data import VLMDataset
from vlm.evaluation.model import RadioVLM

FILES = {"exif": exif_rotated_jpeg(), "cut": encoded(noise(64, 64, 1), "PNG")[:2000]}


class Files:
    """A training source with one sample per file in ``FILES``."""

    def __len__(self):
        return len(FILES)

    def __getitem__(self, index):
        name = list(FILES)[index]
        messages = [
            {"role": "user", "content": "<image>\nWhat?"},
            {"role": "assistant", "content": "x"},
        ]
        return {"id": name, "images": [FILES[name]], "messages": messages}


def visuals(doc):
    return [doc["image"]]


def requests(kind: str) -> list[Instance]:
    """One request per document of kind "generate_until" or "loglikelihood"."""
    out = []
    for i in range(len(FILES)):
        middle = ({"max_new_tokens": 1},) if kind == "generate_until" else ("x",)
        args = ("What?", *middle, visuals, i, "t", "test")
        out.append(Instance(kind, args, 0, metadata={"task": "t", "doc_id": i, "repeats": 1}))
    return out


@pytest.fixture
def lm(tiny_vlm):
    model, processor, _ = tiny_vlm
    lm = RadioVLM(model=model, processor=processor, device="cpu")
    docs = datasets.Dataset.from_dict(
        {"image": [{"bytes": data, "path": None} for data in FILES.values()]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    lm.task_dict = {"t": {"test": docs}}  # decoded by datasets when a document is read
    return lm


def test_an_exif_rotated_image_reaches_the_model_as_in_training(lm, monkeypatch):
    seen = []
    generate = lm.model.generate
    monkeypatch.setattr(lm.model, "generate", lambda **kw: seen.append(kw) or generate(**kw))
    lm.generate_until(requests("generate_until")[:1])
    trained = VLMDataset(Files(), lm.processor)[0]
    assert trained["image_sizes"].tolist() == [[64, 32]]  # upright (portrait)
    evaluated = seen[0]["pixel_values"]
    torch.testing.assert_close(evaluated[0], trained["pixel_values"][0], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["generate_until", "loglikelihood"])
def test_a_truncated_image_is_an_error_naming_the_document(lm, monkeypatch, kind):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as lmms-eval sets it
    assert lm.task_dict["t"]["test"][1]["image"].size == (64, 64)  # decodable when lenient
    call = lm.generate_until if kind == "generate_until" else lm.loglikelihood
    with pytest.raises(ImageLoadError, match=r"task 't' document 1's image.*truncated") as info:
        call(requests(kind))
    assert info.value.reason == "truncated_image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    dataset = VLMDataset(Files(), lm.processor)
    dataset[1]
    assert [s["reason"] for s in dataset.report.summary()["samples"]] == ["truncated_image"]
