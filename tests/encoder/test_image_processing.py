"""ImageProcessor: resize rules on awkward sizes, the max-resolution warning, colour
conversion of every PIL mode / array kind, (de)serialisation."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from encoder.base import VisionEncoder
from encoder.image_processing import (
    ImageProcessor,
    ResolutionWarning,
    batch_pixels,
    pil_to_tensor,
    to_rgb,
)

ODD_SIZES = [(1, 1), (7, 1000), (1000, 7), (4000, 3000), (333, 517)]


def proc(mode: str = "keep-aspect", **kw) -> ImageProcessor:
    kw.setdefault("patch_size", 16)
    kw.setdefault("resolution", 224)
    kw.setdefault("max_resolution", 2048)
    return ImageProcessor(mode=mode, **kw)


# ---------------------------------------------------------------------- sizes, by hand


@pytest.mark.parametrize(
    ("mode", "size", "expected"),
    [
        # keep-aspect, R = 224, patch 16: longest side 224, other side * 224 / longest
        ("keep-aspect", (1, 1), (224, 224)),
        ("keep-aspect", (7, 1000), (16, 224)),  # 1.57 px -> 0 patches -> floor of one patch
        ("keep-aspect", (1000, 7), (224, 16)),
        ("keep-aspect", (4000, 3000), (224, 176)),  # 168 px = 10.5 patches: halves round up
        ("keep-aspect", (333, 517), (144, 224)),  # 144.28 px -> 9 patches
        # native, max 2048: own size rounded to the patch, scaled only when outside the range
        ("native", (1, 1), (16, 16)),  # default min_resolution = one patch
        ("native", (7, 1000), (16, 1008)),  # 1000 = 62.5 patches -> 63
        ("native", (1000, 7), (1008, 16)),
        ("native", (333, 517), (336, 512)),  # 20.8 -> 21, 32.3 -> 32 patches
        ("fixed", (1, 1), (224, 224)),
        ("fixed", (7, 1000), (224, 224)),
        ("fixed", (4000, 3000), (224, 224)),
    ],
)
def test_target_size_by_hand(mode, size, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        assert proc(mode).target_size(*size) == expected


def test_other_patch_and_min_resolution_by_hand():
    # patch 14, R 448: 333 * 448 / 517 = 288.6 px = 20.6 patches -> 21 -> 294
    assert ImageProcessor(14, 448, 1792).target_size(333, 517) == (294, 448)
    p = proc("native", min_resolution=224)
    assert p.target_size(1, 1) == (224, 224)
    assert p.target_size(20, 10) == (224, 112)  # longest side scaled up to 224
    assert p.target_size(7, 1000) == (16, 1008)  # already inside [224, 2048]: untouched


def test_pad_target_is_square_and_resize_size_is_keep_aspect():
    padded, plain = proc(pad=True), proc()
    for size in ODD_SIZES:
        assert padded.target_size(*size) == (224, 224)
        assert padded.resize_size(*size) == plain.target_size(*size)


# ---------------------------------------------------------------------- sizes, swept


def sweep_sizes() -> list[tuple[int, int]]:
    rng = random.Random(0)
    sizes = [*ODD_SIZES, (2, 3), (15, 17), (16, 16), (8, 24), (5000, 1), (1, 5000)]
    sizes += [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(300)]
    return sizes


@pytest.mark.parametrize("patch", [14, 16])
@pytest.mark.parametrize("mode", ["fixed", "keep-aspect", "native"])
def test_sides_are_patch_multiples_and_aspect_is_kept(mode, patch):
    res, max_res = 32 * patch, 1000  # max_res deliberately not a multiple of the patch
    p = ImageProcessor(patch, res, max_res, mode=mode)
    cap = max_res // patch * patch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResolutionWarning)
        for h, w in sweep_sizes():
            th, tw = p.target_size(h, w)
            assert th % patch == 0 and tw % patch == 0 and th >= patch and tw >= patch
            assert max(th, tw) <= cap, (h, w, th, tw)
            if mode == "fixed":
                assert (th, tw) == (res, res)
                continue
            if mode == "keep-aspect":
                scale = res / max(h, w)
                assert max(th, tw) == res
            else:
                scale = min(1.0, cap / max(h, w)) if max(h, w) >= patch else patch / max(h, w)
            for side, out in ((h, th), (w, tw)):
                # nearest multiple of the patch, or the one-patch floor
                assert abs(out - side * scale) <= patch / 2 + 1e-9 or (
                    out == patch and side * scale < patch
                ), (mode, h, w, th, tw)


def test_native_downscale_warns_with_both_sizes():
    with pytest.warns(ResolutionWarning, match=r"4000x3000.*2048x1536"):
        assert proc("native").target_size(4000, 3000) == (2048, 1536)
    with pytest.warns(ResolutionWarning, match=r"3000x4000.*1536x2048"):
        out = proc("native")(Image.new("RGB", (4000, 3000)))
    assert out[0].shape == (3, 1536, 2048)  # resized whole, not cropped


def test_no_warning_when_inside_max():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert proc("native").target_size(2048, 100) == (2048, 96)
        assert proc().target_size(4000, 3000) == (224, 176)  # policy, not a clamp


# ---------------------------------------------------------------------- pixels


def test_call_shapes_dtype_range_and_batching():
    p = proc()
    images = [Image.new("RGB", (w, h), (200, 10, 30)) for h, w in ODD_SIZES]
    out = p(images)
    assert [tuple(t.shape[1:]) for t in out] == [p.target_size(*s) for s in ODD_SIZES]
    for t in out:
        assert t.dtype == torch.float32 and t.shape[0] == 3
        # a constant image stays that colour through any resize: catches channel mix-ups
        assert torch.allclose(t, torch.tensor([200, 10, 30]).div(255).view(3, 1, 1), atol=1e-6)
    assert isinstance(batch_pixels(out), list)
    same = p([Image.new("L", (50, 40)), Image.new("L", (100, 80))])
    stacked = batch_pixels(same)
    assert isinstance(stacked, torch.Tensor) and stacked.shape == (2, 3, 176, 224)
    assert len(p(Image.new("RGB", (3, 3)))) == 1  # a single image -> a list of one
    with pytest.raises(ValueError, match="at least one"):
        batch_pixels([])


def test_orientation_is_kept():
    # left half red, right half blue, 60 high x 200 wide
    a = np.zeros((60, 200, 3), np.uint8)
    a[:, :100, 0] = 255
    a[:, 100:, 2] = 255
    (t,) = proc()(a)
    assert t.shape == (3, 64, 224)
    assert t[0, :, 0].min() == 1.0 and t[2, :, 0].max() == 0.0
    assert t[2, :, -1].min() == 1.0 and t[0, :, -1].max() == 0.0


def test_pad_fills_bottom_right_with_black():
    image = Image.new("RGB", (100, 40), (255, 255, 255))  # -> content 96 x 224 (h x w)
    (padded,) = proc(pad=True)(image)
    (plain,) = proc()(image)
    assert padded.shape == (3, 224, 224) and plain.shape == (3, 96, 224)
    assert torch.equal(padded[:, :96], plain)
    assert padded[:, 96:].abs().sum() == 0


def test_no_resize_when_size_already_fits():
    a = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    (t,) = proc("native")(a)
    assert torch.equal(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


# ---------------------------------------------------------------------- colour conversion


def px(image) -> tuple[int, int, int]:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    return rgb.getpixel((0, 0))


def test_pil_modes():
    assert px(Image.new("1", (2, 2), 1)) == (255, 255, 255)
    assert px(Image.new("L", (2, 2), 77)) == (77, 77, 77)
    assert px(Image.new("LA", (2, 2), (10, 0))) == (255, 255, 255)
    assert px(Image.new("LA", (2, 2), (10, 255))) == (10, 10, 10)
    assert px(Image.new("RGB", (2, 2), (1, 2, 3))) == (1, 2, 3)
    assert px(Image.new("RGBA", (2, 2), (255, 0, 0, 0))) == (255, 255, 255)
    assert px(Image.new("RGBA", (2, 2), (255, 0, 0, 255))) == (255, 0, 0)
    half = px(Image.new("RGBA", (2, 2), (0, 0, 0, 128)))
    assert all(abs(c - 127) <= 1 for c in half)
    assert px(Image.new("CMYK", (2, 2), (255, 0, 0, 0))) == (0, 255, 255)
    assert px(Image.new("YCbCr", (2, 2), (255, 128, 128))) == (255, 255, 255)


def test_palette_with_and_without_transparency():
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255])
    p.putpixel((1, 0), 1)
    assert to_rgb(p).getpixel((1, 0)) == (0, 0, 255)
    p.info["transparency"] = 1  # index 1 is transparent
    rgb = to_rgb(p)
    assert rgb.getpixel((0, 0)) == (255, 0, 0) and rgb.getpixel((1, 0)) == (255, 255, 255)
    grey = Image.new("L", (1, 1), 9)
    grey.info["transparency"] = 9  # transparent colour on a non-alpha mode
    assert px(grey) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_greys_are_scaled_not_clipped(mode):
    values = [0, 65535, 128 * 257, 300, 65407]  # 65407 / 257 = 254.502: exact scale 255/65535
    im = Image.new(mode, (len(values), 1))
    for x, v in enumerate(values):
        im.putpixel((x, 0), v)
    rgb = to_rgb(im)
    # Pillow's convert("L") would give 255 for 300 and for 32896 (clipping)
    assert [rgb.getpixel((x, 0))[0] for x in range(len(values))] == [0, 255, 128, 1, 255]


def test_32_bit_and_float_greys():
    im = Image.new("I", (2, 1))
    im.putpixel((0, 0), -(10**6))
    im.putpixel((1, 0), 10**7)  # beyond 16 bits: stretched over min..max
    rgb = to_rgb(im)
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and rgb.getpixel((1, 0)) == (255, 255, 255)


def float_image(values):
    f = Image.new("F", (len(values), 1))
    for x, v in enumerate(values):
        f.putpixel((x, 0), v)
    rgb = to_rgb(f)
    return [rgb.getpixel((x, 0))[0] for x in range(len(values))]


def test_float_greys_in_unit_range_8_bit_range_or_beyond():
    assert float_image([0.5, 1.0, 0.0]) == [128, 255, 0]  # [0, 1] as they are
    assert float_image([0.5, 1.0, 7.0, 255.0]) == [1, 1, 7, 255]  # convert("F") of 8-bit
    assert float_image([-1.0, 0.0, 999.0]) == [0, 0, 255]  # stretched over min..max
    assert float_image([0.0, 1.0]) == float_image([0.0, 255.0]) == [0, 255]


def test_float_arrays_outside_the_unit_range_are_refused():
    with pytest.raises(ValueError, match=r"in \[0, 1\]; got \[0, 255\] \(divide 0-255"):
        to_rgb(np.array([[0.0, 255.0]], np.float32))
    with pytest.raises(ValueError, match="divide 0-255 images by 255"):
        to_rgb(torch.full((3, 4, 4), 200.0))


def test_numpy_inputs():
    assert px(np.full((3, 5), 200, np.uint8)) == (200, 200, 200)
    assert px(np.full((3, 5, 3), 65535, np.uint16)) == (255, 255, 255)
    assert px(np.full((3, 5, 3), 65535, ">u2")) == (255, 255, 255)
    assert px(np.full((3, 5, 3), 0.5, np.float64)) == (128, 128, 128)
    assert px(np.ones((3, 5), bool)) == (255, 255, 255)
    assert px(np.array([[[40, 0]]], np.uint8)) == (255, 255, 255)  # grey + alpha 0
    assert px(np.array([[[1, 2, 3, 255]]], np.uint8)) == (1, 2, 3)
    chw = np.zeros((3, 5, 7), np.uint8)
    chw[1] = 255
    rgb = to_rgb(chw)  # no trailing channel axis: read as [C, H, W]
    assert rgb.size == (7, 5) and rgb.getpixel((0, 0)) == (0, 255, 0)


def test_torch_inputs():
    t = torch.zeros(3, 6, 9)
    t[2] = 1.0
    rgb = to_rgb(t)
    assert rgb.size == (9, 6) and rgb.getpixel((0, 0)) == (0, 0, 255)
    hwc = torch.zeros(6, 9, 3, dtype=torch.uint8)
    hwc[..., 0] = 255
    assert to_rgb(hwc).size == (9, 6) and px(hwc) == (255, 0, 0)
    assert to_rgb(torch.zeros(3, 4, 3)).size == (3, 4)  # ambiguous: torch means [C, H, W]
    assert px(torch.full((2, 2), 0.5, dtype=torch.bfloat16)) == (128, 128, 128)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="unsupported image type str"):
        to_rgb("cat.png")
    with pytest.raises(TypeError, match="int64"):
        to_rgb(np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match="list of images"):
        to_rgb(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="channel axis"):
        to_rgb(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match="empty side"):
        to_rgb(np.zeros((0, 8), np.uint8))


def test_pil_to_tensor_values():
    t = pil_to_tensor(Image.new("RGB", (3, 2), (255, 0, 51)))
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 500}, r"500 is not a multiple of the patch size 16; use 496 or 512"),
        ({"resolution": 4096}, r"resolution 4096 is above max_resolution 2048"),
        ({"patch_size": 0}, r"patch_size must be a positive integer; got 0"),
        ({"patch_size": True}, r"patch_size must be a positive integer; got True"),
        ({"max_resolution": 8, "resolution": 16}, r"max_resolution 8 is below one patch"),
        ({"mode": "square"}, r"mode must be one of .*'square'"),
        ({"mode": "native", "pad": True}, r"pad=True only applies to mode='keep-aspect'"),
        ({"min_resolution": 64}, r"min_resolution=64 only applies to mode='native'"),
        ({"mode": "native", "min_resolution": 4096}, r"min_resolution 4096 is above"),
        ({"pad": "yes"}, r"pad must be True or False"),
        ({"resample": "sharpest"}, r"unknown resample 'sharpest'"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        proc(**kwargs)


def test_bad_size_arguments():
    with pytest.raises(ValueError, match="height must be a positive integer; got 0"):
        proc().target_size(0, 5)


def test_dict_round_trip():
    for p in [
        proc(),
        proc("native", min_resolution=64, resample="bilinear"),
        proc(pad=True, resample=Image.Resampling.LANCZOS),
        ImageProcessor(14, 448, 1792, mode="fixed", resample=0),
    ]:
        data = json.loads(json.dumps(p.to_dict()))
        assert ImageProcessor.from_dict(data) == p
        assert ImageProcessor.from_dict(data).to_dict() == data
    assert proc(resample="nearest").resample is Image.Resampling.NEAREST
    with pytest.raises(ValueError, match=r"unknown image processor keys \['size'\]"):
        ImageProcessor.from_dict({**proc().to_dict(), "size": 3})


def test_vision_encoder_property():
    class Tower(VisionEncoder):
        patch_size, hidden_size = 16, 8
        preferred_resolution, max_resolution = (384, 512), 2048

    p = Tower().image_processor
    assert p == ImageProcessor(patch_size=16, resolution=512, max_resolution=2048)
    assert p.mode == "keep-aspect" and not p.pad
