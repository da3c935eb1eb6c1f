"""Merge pictures: every patch of one output token painted in that token's colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from token_merge import compress, token_colors, visualize


def test_each_token_gets_one_colour_over_all_its_patches():
    h, w, patch = 6, 8, 4
    grid = torch.zeros(1, h, w, 3)
    grid[0, :3] = torch.tensor([1.0, 0.0, 0.0])  # two flat halves and one odd patch
    grid[0, 3:] = torch.tensor([0.0, 1.0, 0.0])
    grid[0, 5, 7] = torch.tensor([0.0, 0.0, 1.0])
    out = compress(grid, "tome", num_tokens=5)
    image = Image.new("RGB", (w * patch, h * patch), "white")
    painted = np.array(visualize(image, out, alpha=1.0))
    picture = torch.from_numpy(painted).reshape(h, patch, w, patch, 3)
    colours = token_colors(5)
    slot = out.assignment[0].reshape(h, w)
    for y in range(h):
        for x in range(w):
            cell = picture[y, :, x].reshape(-1, 3)
            assert (cell == colours[slot[y, x]]).all()
    assert len({tuple(c.tolist()) for c in colours}) == 5


def test_mean_style_fills_regions_with_their_mean_colour():
    grid = torch.zeros(1, 1, 2, 1)  # both patches merge into one token
    out = compress(grid, "tome", num_tokens=1)
    image = Image.new("RGB", (4, 2))
    image.paste((200, 0, 0), (0, 0, 2, 2))
    image.paste((0, 0, 100), (2, 0, 4, 2))
    picture = visualize(image, out, style="mean")
    assert picture.size == image.size
    assert (np.array(picture) == [100, 0, 50]).all()


def test_visualize_rejects_mismatched_grid_and_bad_options():
    out = compress(torch.randn(1, 4, 4, 2), "tome", num_tokens=4)
    image = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="grid_hw 3x4 has 12 cells but the assignment has 16"):
        visualize(image, out, (3, 4))
    with pytest.raises(ValueError, match="style must be"):
        visualize(image, out, style="blend")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        visualize(image, out, alpha=2)
