"""What every ``VisionEncoder`` answers the same way: ``blockwise_tome``, ``source`` and
``drop_adaptors`` (defaults on the base class, RADIO's and the towers' own)."""

from __future__ import annotations

from pathlib import Path

import torch

from encoder import EncoderOutput, VisionEncoder, load_radio, load_tower

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"


class Plain(VisionEncoder):
    patch_size = 16

    def forward(self, pixel_values):
        return EncoderOutput(summary=None, grid=pixel_values.permute(0, 2, 3, 1))


def test_a_plain_encoder_merges_nothing_names_no_source_and_has_no_adaptors():
    encoder = Plain()
    assert encoder.blockwise_tome is None and encoder.source is None
    encoder.drop_adaptors()  # nothing to free, and no error


def test_radio_reports_its_version_and_its_block_wise_budget():
    assert load_radio(FIXTURE).source == "radio_v2.5-b"  # the version its config.json names
    assert load_radio(FIXTURE).blockwise_tome is None
    assert load_radio(FIXTURE, blockwise_tome=12).blockwise_tome == 12


def test_radio_drop_adaptors_frees_the_teacher_heads():
    encoder = load_radio(FIXTURE, adaptor_names=["clip", "sam"])
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = encoder(x)
    assert sorted(before.adaptors) == ["clip", "sam"]
    weights = sum(p.numel() for p in encoder.parameters())
    encoder.drop_adaptors()
    assert len(encoder.adaptors) == 0 and encoder.adaptor_names == []
    assert sum(p.numel() for p in encoder.parameters()) < weights
    with torch.no_grad():
        after = encoder(x)
    assert after.adaptors == {}
    torch.testing.assert_close(after.grid, before.grid, rtol=0, atol=0)


def test_towers_report_where_they_came_from_and_their_block_wise_budget(folders):
    folder = folders["clip"]
    tower = load_tower(folder)
    assert tower.source == str(folder) and tower.blockwise_tome is None
    assert load_tower(folder, blockwise_tome=5).blockwise_tome == 5
    tower.drop_adaptors()  # towers have no teacher heads: the default no-op
