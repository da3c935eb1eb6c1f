"""`radio-vlm encoder pca | equivariance` end to end on the tiny b-like RADIO fixture (with
tiles too: paper Table 2's tiling rows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from encoder import build_encoder
from encoder.analysis import scale_equivariance
from recipes.cli import main
from recipes.encoder_analysis import encode_at_resolutions, encode_tiled_at_resolutions

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"  # max 512 px, patch 16
RESOLUTIONS = [128, 256, 512]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    shapes = Image.new("RGB", (300, 200), (30, 90, 160))
    draw = ImageDraw.Draw(shapes)
    draw.ellipse((40, 30, 170, 160), fill=(230, 200, 40))
    draw.rectangle((190, 60, 280, 180), fill=(200, 40, 40))
    draw.line((0, 190, 300, 120), fill=(255, 255, 255), width=8)
    ramp = torch.linspace(0, 255, 160).to(torch.uint8)
    tall = Image.fromarray(torch.stack([ramp[:, None].expand(160, 120)] * 3, -1).numpy())
    paths = {"shapes": folder / "shapes.png", "tall": folder / "tall.png"}
    shapes.save(paths["shapes"])
    tall.save(paths["tall"])
    return paths


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(FIXTURE).eval()


def test_pca_writes_one_panel_per_resolution(images, tmp_path, capsys):
    out = tmp_path / "figs" / "pca.png"
    argv = ["encoder", "pca", str(images["shapes"]), "--encoder", str(FIXTURE)]
    assert main([*argv, "--resolutions", "512,128,256", "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.width > 3 * picture.height  # input + 3 panels side by side
    # longest side = resolution, the other rounded to the patch: 300x200 -> 8x5 .. 32x21 cells
    assert "128 px -> 5x8, 256 px -> 11x16, 512 px -> 21x32" in capsys.readouterr().out


def test_equivariance_json_equals_the_library(images, encoder, tmp_path):
    out = tmp_path / "eq"
    argv = ["encoder", "equivariance", str(images["shapes"]), str(images["tall"])]
    assert (
        main([*argv, "--encoder", str(FIXTURE), "--resolutions", "128,256,512", "--out", str(out)])
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["resolutions"] == RESOLUTIONS
    assert results["settings"] == {
        "variance": "unbiased",
        "interpolation": "bilinear",
        "align_corners": False,
        "antialias": False,
    }
    rows = {Path(r["image"]).stem: r for r in results["images"]}
    assert rows["tall"]["grids"] == ["8x6", "16x12", "32x24"]
    for name, path in images.items():
        with Image.open(path) as image:
            grids = encode_at_resolutions(encoder, image.convert("RGB"), RESOLUTIONS)
        want = scale_equivariance([g.permute(2, 0, 1) for g in grids])
        assert rows[name]["scale_equivariance"] == want
        assert 0 < want < 2
    mean = sum(r["scale_equivariance"] for r in rows.values()) / 2
    assert results["mean_scale_equivariance"] == pytest.approx(mean, rel=1e-15)
    report = (out / "report.md").read_text()
    assert (
        f"| {images['tall']} | 8x6, 16x12, 32x24 | {rows['tall']['scale_equivariance']:.4f} |"
        in report
    )
    assert "| **mean** |" in report
    with Image.open(out / "equivariance.png") as picture:
        assert picture.width > 100


def test_grids_are_the_encoder_on_the_aspect_kept_image_in_0_1(images, encoder):
    with Image.open(images["tall"]) as image:
        image = image.convert("RGB")
        (grid,) = encode_at_resolutions(encoder, image, [128])
        # 120x160 -> longest side 128, width 120 * 0.8 = 96 (a multiple of 16 already)
        resized = np.asarray(image.resize((96, 128), Image.Resampling.BICUBIC))
    pixels = torch.from_numpy(resized.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        direct = encoder(pixels).grid[0]
    assert grid.shape == (8, 6, 64)
    torch.testing.assert_close(grid, direct, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["pca", "--resolutions", "256,1024"],
            r"resolution 1024 is above the encoder's max_resolution 512",
        ),
        (
            ["pca", "--resolutions", "250"],
            r"resolution 250 is not a multiple of the encoder's patch size 16; use 240 or 256",
        ),
        (["equivariance", "--resolutions", "256"], r"needs >= 2 --resolutions; got \[256\]"),
    ],
)
def test_bad_resolutions_are_refused(images, argv, message):
    command, *rest = argv
    with pytest.raises(SystemExit, match=message):
        main(["encoder", command, str(images["shapes"]), "--encoder", str(FIXTURE), *rest])


def test_bad_inputs_are_named(images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(SystemExit, match=r"cannot read image .*broken.png"):
        main(["encoder", "equivariance", str(broken), "--encoder", str(FIXTURE)])
    with pytest.raises(SystemExit, match="cannot build --encoder"):
        main(["encoder", "pca", str(images["shapes"]), "--encoder", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error, exit code 2
        main(["encoder", "pca", str(broken), "--encoder", "x", "--resolutions", "a,b"])
    assert exit_info.value.code == 2
    assert "--resolutions must be positive integers" in capsys.readouterr().err


def test_adaptor_features_and_transparent_images(images, tmp_path):
    with Image.open(images["shapes"]) as image:
        rgba = image.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "rgba.png")
    out = tmp_path / "eq"
    argv = ["encoder", "equivariance", str(tmp_path / "rgba.png"), "--encoder", str(FIXTURE)]
    assert main([*argv, "--resolutions", "128,256", "--adaptor", "dino_v2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["adaptor"] == "dino_v2"
    dino = build_encoder(FIXTURE, adaptor_names=["dino_v2"]).eval()
    grids = encode_at_resolutions(dino, rgba, [128, 256], adaptor="dino_v2")
    assert [g.shape for g in grids] == [(5, 8, 56), (11, 16, 56)]  # the dino_v2 head's width
    want = scale_equivariance([g.permute(2, 0, 1) for g in grids])
    assert results["images"][0]["scale_equivariance"] == want
    with pytest.raises(ValueError, match="build it with adaptor_names=\\['sam'\\]"):
        encode_at_resolutions(dino, rgba, [128], adaptor="sam")


def test_equivariance_with_tiles_stitches_each_tile_grid_back(images, encoder, tmp_path, capsys):
    out = tmp_path / "eq"
    argv = ["encoder", "equivariance", str(images["shapes"]), str(images["tall"]), "--encoder",
            str(FIXTURE), "--resolutions", "128,256,512", "--tiles", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    tiled = results["tiled"]
    assert tiled["tile_size"] == 128  # default: the smallest resolution
    rows = {Path(r["image"]).stem: r for r in tiled["images"]}
    # 300x200 at 256 px is 256x171 -> 1x2 tiles; at 512 px 512x341 -> 3x4 (sides rounded)
    assert rows["shapes"]["tiles"] == ["1x1", "1x2", "3x4"]
    assert rows["shapes"]["grids"] == ["8x8", "8x16", "24x32"]
    assert rows["tall"]["tiles"] == ["1x1", "2x2", "4x3"]
    with Image.open(images["shapes"]) as image:
        image = image.convert("RGB")
    grids, layouts = encode_tiled_at_resolutions(encoder, image, RESOLUTIONS, 128)
    assert rows["shapes"]["scale_equivariance"] == scale_equivariance(
        [g.permute(2, 0, 1) for g in grids]
    )
    # by hand at 512 px: the image resized to 3x4 tiles, each encoded alone, put in its place
    resized = image.resize((4 * 128, 3 * 128), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        for r in range(3):
            for c in range(4):
                tile = pixels[:, r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128]
                own = encoder(tile[None]).grid[0]  # [8, 8, C]
                stitched = grids[2][r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8]
                torch.testing.assert_close(stitched, own, rtol=1e-4, atol=1e-4)
    assert [tuple(layout) for layout in layouts] == [(1, 1, False), (1, 2, False), (3, 4, False)]
    mean = sum(r["scale_equivariance"] for r in rows.values()) / 2
    assert tiled["mean_scale_equivariance"] == pytest.approx(mean, rel=1e-12)
    report = (out / "report.md").read_text()
    assert "Tiled (paper Table 2's tiling rows): 128 px tiles" in report
    assert f"| {images['tall']} | 1x1, 2x2, 4x3 | 8x8, 16x16, 32x24 |" in report
    assert "128 px tiles" in capsys.readouterr().out
    # an explicit tile size; resolutions that are not whole tiles are refused
    assert main([*argv[:-3], "--tiles", "256", "--resolutions", "256,512", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["tiled"]["tile_size"] == 256
    with pytest.raises(SystemExit, match=r"whole number of tiles; \[192\] are not"):
        main([*argv[:-5], "--resolutions", "128,192", "--tiles", "--out", str(out)])
    with pytest.raises(
        SystemExit, match=r"tile size 100 px must be a multiple of .* patch size 16"
    ):
        main([*argv[:-3], "--tiles", "100", "--out", str(out)])
