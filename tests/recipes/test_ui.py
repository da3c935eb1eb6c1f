"""`radio-vlm ui` without a browser: the merge maps and error table on the model's own encoder
grid, the loopback default, bad input, and the base install (no gradio) naming the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from recipes.chat_model import load_chat_model
from recipes.cli import build_parser, main
from recipes.ui.maps import encode_page, errors_table, merge_maps, sizes_chart
from token_merge import compress

REPO = Path(__file__).resolve().parents[2]


def test_maps_compress_the_towers_own_grid_at_one_budget(chat_model_dir, pages):
    model, processor, _ = load_chat_model(chat_model_dir, device="cpu")
    page = encode_page(model, processor, Image.open(pages[0]))
    with torch.inference_mode():
        pixels = processor.image_processor(Image.open(pages[0]))[0]
        expected = model.vision_tower(pixels[None]).grid
    assert torch.equal(page.grid, expected) and page.grid_hw == (8, 8)
    assert page.picture.size == (384, 384)  # enlarged so a patch is 48 px on screen

    maps = merge_maps(page, 16)
    assert [m.method for m in maps] == ["tome", "avgpool", "unshuffle"]
    assert [m.tokens for m in maps] == [16, 16, 16]
    assert [m.channels for m in maps] == [64, 64, 4 * 64]  # unshuffle: 2x2 blocks, 4x wider
    assert maps[2].error == 0  # lossless: the price is paid in width
    assert all(m.picture.size == (384, 384) for m in maps)
    tome = compress(page.grid, "tome", 16)
    assert torch.equal(maps[0].sizes, tome.sizes[0]) and maps[0].sizes.sum() == 64
    table = errors_table(maps, page.grid_hw)
    assert "Encoder grid 8x8 = 64 patches" in table
    assert f"| ToMe | 16 | 64 | {maps[0].error:.4f} |" in table
    assert sizes_chart(maps[0].sizes, "title").width > 300


def test_a_budget_one_method_cannot_give_is_said_in_the_table(chat_model_dir, pages):
    model, processor, _ = load_chat_model(chat_model_dir, device="cpu")
    page = encode_page(model, processor, Image.open(pages[0]))
    tome, avgpool, unshuffle = merge_maps(page, 61)  # prime: no kh x kw = 61 fits 8x8
    assert tome.tokens == 61 and unshuffle.tokens == 16  # 2x2 blocks: s=1 would give 64 > K
    assert avgpool.picture is None and avgpool.problem
    assert f"| avg-pool | - | - | cannot: {avgpool.problem} |" in errors_table(
        [tome, avgpool, unshuffle], page.grid_hw
    )


def test_ui_binds_to_loopback_and_defaults_to_the_demo_model():
    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1" and args.port == 7860
    assert args.pretrained == "runs/quickstart/runs/tome/stage3_sft"
    from recipes.ui.app import launch_options

    options = launch_options(args.host, args.port)
    assert options["server_name"] == "127.0.0.1" and options["share"] is False


def test_ui_bad_folder_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["ui", "--pretrained", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("radio-vlm ui: error: no such folder: ") and "\n" not in err


def test_without_gradio_the_cli_loads_and_ui_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['gradio'] = None  # as if it were not installed: importing it fails\n"
        "from recipes.cli import build_parser, main\n"
        "build_parser()\n"
        "sys.exit(main(['ui']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "radio-vlm ui: error: the web page needs gradio, an optional extra: "
        "pip install 'radio-vlm[ui]'"
    )
