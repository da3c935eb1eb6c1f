"""encoder.image_loading: one loader for every entry point (EXIF, strict decoding, pixel limit,
modes, NaN), and the ImageProcessor that calls it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from image_kit import encoded, exif_rotated_jpeg, noise, png_header_only
from PIL import Image, ImageFile

from encoder.image_loading import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, strict_decoding
from encoder.image_processing import ImageProcessor, pil_to_tensor


def test_exif_orientation_is_applied_to_paths_bytes_and_opened_images(tmp_path):
    data = exif_rotated_jpeg()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    assert stored.size == (40, 20)  # (W, H) as stored: sideways
    upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    notes = []
    for source in (path, str(path), data, Image.open(path)):
        rgb = load_image(source, note=lambda *a: notes.append(a))
        assert rgb.size == (20, 40)
        np.testing.assert_array_equal(np.asarray(rgb), upright)
    assert notes == [("exif_transposed", "orientation 6")] * 4
    # once upright, the tag is gone: a second pass changes nothing
    again = load_image(load_image(path))
    np.testing.assert_array_equal(np.asarray(again), upright)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused_even_with_pillows_global_flag_on(tmp_path, fmt, monkeypatch):
    data = encoded(noise(64, 64, 1), fmt)
    data = data[:2000] if fmt == "PNG" else data[:700]
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what lmms-eval does
    Image.open(path).load()  # Pillow alone decodes it, filling the missing part
    for source in (path, data, Image.open(path)):
        with pytest.raises(ImageLoadError, match="truncated") as info:
            load_image(source)
        assert info.value.reason == "truncated_image"
    with pytest.raises(ImageLoadError, match="truncated"):
        ImageProcessor(patch_size=16, resolution=64, max_resolution=512)(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was
    with strict_decoding():
        assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_a_169_mpx_png_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(13_000, 13_000))  # 169 Mpx, under Pillow's bomb error
    assert 2 * Image.MAX_IMAGE_PIXELS > 13_000**2
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "image_too_large"
    message = str(info.value)
    assert "13000x13000 (WxH) = 169.0 Mpx" in message
    assert f"max_pixels={DEFAULT_MAX_PIXELS} (64 Mpx)" in message
    assert "raise max_pixels" in message
    assert decoded == []  # refused from the header alone
    monkeypatch.undo()
    # without the limit the pixels would be decoded (here: found truncated after 1000 bytes)
    with pytest.raises(ImageLoadError) as info:
        load_image(path, max_pixels=None)
    assert info.value.reason == "truncated_image"


def test_the_pixel_limit_is_exact_and_applies_to_every_kind_of_input(tmp_path):
    image = noise(100, 50)  # 5000 pixels
    path = tmp_path / "a.png"
    image.save(path)
    array = np.array(image)
    for source in (path, encoded(image, "PNG"), image, array, torch.from_numpy(array)):
        assert load_image(source, max_pixels=5000).size == (50, 100)
        with pytest.raises(ImageLoadError, match=r"50x100 \(WxH\)") as info:
            load_image(source, max_pixels=4999)
        assert info.value.reason == "image_too_large"
    assert load_image(path, max_pixels=None).size == (50, 100)


def test_pillows_own_bomb_limit_still_applies_without_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "a.png"
    noise(30, 30).save(path)  # 900 > 2 x 100: Pillow's error
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_PIXELS") as info:
        load_image(path, max_pixels=None)
    assert info.value.reason == "image_too_large"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_are_errors_not_black(bad):
    array = np.full((4, 4, 3), 0.5, np.float32)
    array[1, 2, 0] = bad
    grey = Image.fromarray(array[..., 0], mode="F")
    for source in (array, torch.from_numpy(array).permute(2, 0, 1), grey):
        with pytest.raises(ImageLoadError, match="1 NaN or infinite values") as info:
            load_image(source)
        assert info.value.reason == "unsupported_image"


def test_modes_become_rgb_and_say_so():
    notes = []
    rgba = load_image(Image.new("RGBA", (4, 3), (255, 0, 0, 128)), note=lambda *a: notes.append(a))
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (255, 127, 127)  # on white
    cmyk = load_image(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), note=lambda *a: notes.append(a))
    assert cmyk.getpixel((0, 0)) == (255, 0, 0)
    sixteen = load_image(Image.fromarray(np.full((3, 4), 40000, np.uint16)))
    assert sixteen.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 65535 * 255, not clipped
    assert notes == [("converted_mode", "RGBA -> RGB"), ("converted_mode", "CMYK -> RGB")]


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.png does not exist") as info:
        load_image(tmp_path / "nope.png")
    assert info.value.reason == "missing_image"
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match=r"junk\.png: not a recognised image") as info:
        load_image(tmp_path / "junk.png")
    assert info.value.reason == "corrupt_image"


def test_the_image_processor_uses_the_loader_and_keeps_max_pixels(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(exif_rotated_jpeg())
    proc = ImageProcessor(patch_size=16, resolution=64, max_resolution=512)
    expected = pil_to_tensor(load_image(path).resize((32, 64), Image.Resampling.BICUBIC))
    torch.testing.assert_close(proc(path)[0], expected)  # upright: 64x32 (HxW)
    proc = ImageProcessor(patch_size=16, resolution=64, max_resolution=512, max_pixels=799)
    with pytest.raises(ImageLoadError, match="max_pixels=799"):
        proc(path)  # 40x20 = 800 pixels
    assert proc(noise(10, 40))[0].shape == (3, 16, 64)
    assert ImageProcessor.from_dict(proc.to_dict()) == proc
    legacy = {k: v for k, v in proc.to_dict().items() if k != "max_pixels"}
    assert ImageProcessor.from_dict(legacy).max_pixels == DEFAULT_MAX_PIXELS  # older configs
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        ImageProcessor(patch_size=16, resolution=64, max_resolution=512, max_pixels=0)
