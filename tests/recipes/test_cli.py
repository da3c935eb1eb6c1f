"""The `radio-vlm` command line and the token-merge demo behind `make demo`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from recipes.cli import main


def test_merge_demo_writes_pictures_and_a_table(tmp_path, capsys):
    assert main(["merge-demo", "--size", "256", "--tokens", "32", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"tome", "avgpool", "unshuffle"}
    assert by_method["tome"]["tokens"] == by_method["avgpool"]["tokens"] == 32
    assert by_method["tome"]["grid"] == "16x16"
    # on a document page ToMe keeps text that pooling smears; unshuffle is lossless but 16x wider
    assert by_method["tome"]["reconstruction_mse"] < by_method["avgpool"]["reconstruction_mse"]
    assert by_method["unshuffle"]["reconstruction_mse"] == 0
    assert by_method["unshuffle"]["channels_per_token"] == 16 * 768
    for name in ("merge.png", "panel.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.width > 100
    assert "| tome | 16x16 | 32 |" in capsys.readouterr().out
    assert "| tome |" in (tmp_path / "report.md").read_text()


def test_merge_demo_on_a_user_image_and_a_broken_one(tmp_path):
    Image.new("RGB", (300, 120), "white").save(tmp_path / "wide.png")
    assert (
        main(
            [
                "merge-demo",
                "--image",
                str(tmp_path / "wide.png"),
                "--size",
                "160",
                "--tokens",
                "8",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "out" / "results.json").read_text())[0]["grid"] == "4x10"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SystemExit, match=r"cannot read --image .*broken.png"):
        main(["merge-demo", "--image", str(tmp_path / "broken.png"), "--out", str(tmp_path)])


def test_console_script_is_installed_and_lists_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "recipes.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "merge-demo" in result.stdout
