"""One image path: the training dataset, ImageProcessor and VLMProcessor load every image the
same way (encoder.image_loading). The eval model's side is in tests/evaluation."""

from __future__ import annotations

import pytest
import torch
from image_kit import encoded, exif_rotated_jpeg, noise, png_header_only
from PIL import Image, ImageFile

from encoder.image_loading import ImageLoadError
from encoder.image_processing import ImageProcessor
from token_merge import TokenCompressor
from vlm.data import VLMDataset
from vlm.processing import VLMProcessor
from vlm.tiny import tiny_tokenizer


def processor(**image_settings) -> VLMProcessor:
    return VLMProcessor(
        tiny_tokenizer("chatml"),
        ImageProcessor(patch_size=16, resolution=64, max_resolution=512, **image_settings),
        TokenCompressor("tome", num_tokens=4),
    )


class Images:
    """A source of one-image samples; ``images[i]`` is sample i's image (any kind)."""

    def __init__(self, *images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        messages = [
            {"role": "user", "content": "<image>\nWhat?"},
            {"role": "assistant", "content": f"answer {index}"},
        ]
        return {"id": f"s{index}", "images": [self.images[index]], "messages": messages}

    def sample_id(self, index):
        return f"s{index}"


def ask(proc: VLMProcessor, image) -> dict:
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    return proc(images=[image], conversations=chat, add_generation_prompt=True)


def test_an_exif_rotated_jpeg_gives_the_same_pixels_everywhere(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(exif_rotated_jpeg())
    proc = processor()
    trained = VLMDataset(Images(path), proc)[0]["pixel_values"][0]
    assert trained.shape == (3, 64, 32)  # upright (portrait), not the stored landscape
    for image in (path, str(path), Image.open(path)):
        torch.testing.assert_close(ask(proc, image)["pixel_values"][0], trained, rtol=0, atol=0)
        torch.testing.assert_close(proc.image_processor(image)[0], trained, rtol=0, atol=0)


def test_a_truncated_png_is_refused_everywhere_even_with_the_global_flag_on(tmp_path, monkeypatch):
    path = tmp_path / "cut.png"
    path.write_bytes(encoded(noise(64, 64, 1), "PNG")[:2000])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as importing lmms-eval does
    proc = processor()
    for image in (path, Image.open(path)):
        with pytest.raises(ImageLoadError, match="truncated"):
            ask(proc, image)
        with pytest.raises(ImageLoadError, match="truncated"):
            proc.image_processor(image)
    dataset = VLMDataset(Images(path, noise(32, 32)), proc)
    assert dataset[0]["labels"].ne(-100).any()  # the next usable sample instead
    [skip] = dataset.report.summary()["samples"]
    assert (skip["id"], skip["reason"]) == ("s0", "truncated_image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_too_many_pixels_is_a_clear_error_or_a_counted_skip(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(13_000, 13_000))  # 169 Mpx, under Pillow's bomb error
    proc = processor()
    with pytest.raises(ImageLoadError, match=r"13000x13000 \(WxH\) = 169.0 Mpx.*max_pixels"):
        ask(proc, path)
    dataset = VLMDataset(Images(path, noise(32, 32)), proc)
    dataset[0]
    [skip] = dataset.report.summary()["samples"]
    assert skip["reason"] == "image_too_large" and "169.0 Mpx" in skip["detail"]
    # the limit is the image processor's, for training as for inference
    small = processor(max_pixels=799)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(exif_rotated_jpeg())  # 800 pixels
    with pytest.raises(ImageLoadError, match="max_pixels=799"):
        ask(small, photo)
    dataset = VLMDataset(Images(photo, noise(10, 40)), small)
    dataset[0]
    assert [s["reason"] for s in dataset.report.summary()["samples"]] == ["image_too_large"]


def test_nan_pixels_are_an_error_or_a_counted_skip():
    pixels = torch.rand(3, 32, 32)
    pixels[0, 3, 4] = float("nan")
    proc = processor()
    with pytest.raises(ImageLoadError, match="NaN"):
        ask(proc, pixels)
    dataset = VLMDataset(Images(pixels, noise(32, 32)), proc)
    dataset[0]
    [skip] = dataset.report.summary()["samples"]
    assert skip["reason"] == "unsupported_image" and "NaN" in skip["detail"]
