"""ImageProcessor's ``pad`` mode (LLaVA / VILA's expand2square, then a square resize) and its
``pad_color``, which each encoder sets to its normalisation mean."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from encoder import build_encoder
from encoder.image_processing import DEFAULT_PAD_COLOR, ImageProcessor
from encoder.tiny import ODD_PREPROCESSOR, tiny_tower_checkpoint, write_tiny_radio

GREY = (0.5, 0.25, 0.75)  # drawn as (127, 63, 191)


def proc(mode: str = "pad", **kw) -> ImageProcessor:
    return ImageProcessor(patch_size=16, resolution=64, max_resolution=512, mode=mode, **kw)


def expand2square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA's ``expand2square`` (llava/mm_utils.py), the reference."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def test_pad_is_square_whatever_the_shape_and_every_other_mode_is_unchanged():
    for size in [(1, 1), (7, 1000), (1000, 7), (4000, 3000), (48, 64)]:
        assert proc().target_size(*size) == (64, 64)
    assert proc("keep-aspect").target_size(48, 64) == (48, 64)


def test_a_wide_image_is_centred_on_the_pad_colour():
    image = Image.new("RGB", (64, 32), (255, 255, 255))  # h x w = 32 x 64: bands above and below
    (pixels,) = proc(pad_color=GREY)(image)
    colour = torch.tensor([127, 63, 191]).div(255).view(3, 1)
    assert pixels.shape == (3, 64, 64)
    assert torch.equal(pixels[:, :16].flatten(1).unique(dim=1), colour)  # top band
    assert torch.equal(pixels[:, 48:].flatten(1).unique(dim=1), colour)  # bottom band
    assert torch.all(pixels[:, 16:48] == 1.0)  # the page, whole, in the middle
    (tall,) = proc(pad_color=GREY)(image.rotate(90, expand=True))
    assert torch.equal(tall, pixels.transpose(1, 2))  # left and right bands for a tall one


def test_pad_matches_expand2square_then_resize():
    y, x = np.mgrid[0:90, 0:200]  # smooth, so different resampling grids still agree
    image = Image.fromarray(
        np.stack([x * 255 // 199, y * 255 // 89, (x + y) * 255 // 287], -1).astype(np.uint8)
    )
    p = proc(pad_color=GREY)
    (ours,) = p(image)
    fill = tuple(int(c * 255) for c in GREY)
    ref = expand2square(image, fill).resize((64, 64), resample=p.resample)
    reference = torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1).float() / 255
    # the same picture; only the few pixels where page and padding meet are resampled apart
    assert (ours - reference).abs().mean() < 0.02
    assert torch.equal(ours[:, :10], reference[:, :10])  # the padding band, exactly


def test_pad_colour_default_validation_and_round_trip():
    assert proc().pad_color == DEFAULT_PAD_COLOR  # the CLIP mean LLaVA pads with
    for bad in [(0.5, 0.5), (0.1, 0.2, 1.5), "grey", (True, 0.0, 0.0), (float("nan"), 0, 0)]:
        with pytest.raises(ValueError, match=r"pad_color must be 3 numbers in \[0, 1\]"):
            proc(pad_color=bad)
    with pytest.raises(ValueError, match=r"mode must be one of \('fixed', 'keep-aspect', 'nat"):
        proc("square")
    with pytest.raises(ValueError, match="pad=True only applies to mode='keep-aspect'"):
        proc(pad=True)  # pad=True is the other padding: black, bottom/right, keep-aspect only
    p = proc(pad_color=[0.5, 0.25, 1])
    assert p.pad_color == (0.5, 0.25, 1.0)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["mode"] == "pad" and data["pad_color"] == [0.5, 0.25, 1.0]
    assert ImageProcessor.from_dict(data) == p
    legacy = {k: v for k, v in proc("keep-aspect").to_dict().items() if k != "pad_color"}
    assert ImageProcessor.from_dict(legacy) == proc("keep-aspect")  # saved before pad_color


def test_encoders_pad_with_their_own_normalisation_mean(tmp_path):
    radio = build_encoder(write_tiny_radio(tmp_path / "radio"))
    assert radio.image_processor.pad_color == pytest.approx(radio.config.norm_mean)
    tower = build_encoder(
        tiny_tower_checkpoint(tmp_path / "clip", "clip", preprocessor=ODD_PREPROCESSOR)
    )
    assert tower.image_processor.pad_color == pytest.approx(ODD_PREPROCESSOR["image_mean"])
    # the padding then normalises to (almost: 0-255 rounding) zero inside the tower
    pad = proc(pad_color=tower.image_processor.pad_color)
    (pixels,) = pad(Image.new("RGB", (64, 16)))
    assert tower.normalize(pixels[None])[0, :, 0].abs().max() < 0.05
