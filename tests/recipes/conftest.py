"""Shared by the chat and ui tests: a tiny random VLM saved as a finished stage, and pages.

Also the ``browser`` marker: the ui test that drives headless Chromium (`.ci/run` installs
Debian's chromium + chromium-driver; without them locally the test skips and says so).
"""

from __future__ import annotations

import pytest

import vlm
from encoder.tiny import write_tiny_radio
from recipes.merge_demo import render_page
from vlm.tiny import tiny_llm, tiny_tokenizer
from vlm.training.checkpoints import write_marker


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives the web page in headless Chromium (~30 s; needs chromium)"
    )


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory):
    """A tiny random VLM (RADIO-style tower, ToMe to K=4, Qwen2) saved as a finished stage
    (complete.json), so it loads through vlm.training.load_stage as a trained stage does."""
    root = tmp_path_factory.mktemp("chat_model")
    radio = write_tiny_radio(root / "radio", patch_size=8, preferred_resolution=64)
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3, seed=1)
    model, processor = vlm.build_vlm(radio, llm, tokenizer=tokenizer, num_tokens=4)
    folder = root / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_marker(folder, "stage", 0, recursive=False)
    return folder


@pytest.fixture(scope="session")
def pages(tmp_path_factory):
    """Two document pages (PNG files, 128 px)."""
    root = tmp_path_factory.mktemp("pages")
    paths = []
    for seed in (0, 1):
        paths.append(root / f"page{seed}.png")
        render_page(128, seed).save(paths[-1])
    return paths
