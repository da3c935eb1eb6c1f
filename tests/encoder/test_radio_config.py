"""Translating RADIO training args into transformers' RadioConfig; the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoder import ENCODERS, RadioEncoder, build_encoder, radio_config_from_args, registry_names

TEACHERS = [
    {"name": "clip"},
    {"name": "siglip"},
    {"name": "dino_v2"},
    {"name": "sam", "use_summary": False},
]
CONDITIONER = {"summary_idxs": [0, 1, 2], "norm_mean": [0.5] * 3, "norm_std": [0.25] * 3}


@pytest.mark.parametrize(
    "args,expected",
    [
        # RADIOv2.5-H: ViT-H dims, 4 teachers -> 4 cls + 4 registers, CPE table 2048 px
        (
            {
                "model": "vit_huge_patch16_224",
                "cls_token_per_teacher": True,
                "teachers": TEACHERS,
                "register_multiple": 8,
                "cpe_max_size": 2048,
            },
            {
                "hidden_size": 1280,
                "num_hidden_layers": 32,
                "num_attention_heads": 16,
                "num_cls_tokens": 4,
                "num_registers": 4,
                "max_img_size": 2048,
            },
        ),
        # duplicated teacher names share a cls token; explicit register count wins
        (
            {
                "model": "vit_large_patch16_224",
                "cls_token_per_teacher": True,
                "teachers": [*TEACHERS, {"name": "clip"}],
                "cpe_num_registers": 7,
                "register_multiple": 8,
                "cpe_max_size": 1000,
            },
            {
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_cls_tokens": 4,
                "num_registers": 7,
                "max_img_size": 992,  # round(62.5) = 62: half to even, as the reference
            },
        ),
        # one cls token padded to a multiple of 8: 7 registers; model_kwargs override the dims
        (
            {
                "model": "vit_base_patch16_224",
                "cls_token_per_teacher": False,
                "register_multiple": 8,
                "model_kwargs": {"embed_dim": 96, "depth": 3, "num_heads": 4},
                "cpe_max_size": 512,
            },
            {
                "hidden_size": 96,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,
                "num_cls_tokens": 1,
                "num_registers": 7,
                "max_img_size": 512,
            },
        ),
        # 8 cls tokens and a multiple of 8: a full extra group of registers, as the reference does
        (
            {
                "model": "vit_base_patch16_224",
                "cls_token_per_teacher": True,
                "teachers": [{"name": str(i)} for i in range(8)],
                "register_multiple": 8,
            },
            {"num_cls_tokens": 8, "num_registers": 8, "max_img_size": 2048},
        ),
    ],
)
def test_args_translation(args, expected):
    config = radio_config_from_args(args, **CONDITIONER)
    for key, value in expected.items():
        assert getattr(config, key) == value, key
    assert config.norm_mean == [0.5] * 3 and config.norm_std == [0.25] * 3


def test_registry_lists_every_published_family():
    assert {
        "radio_v2.5-b",
        "radio_v2.5-l",
        "radio_v2.5-h",
        "radio_v2.5-g",
        "c-radio_v2-g",
        "c-radio_v3-b",
        "c-radio_v3-h",
        "c-radio_v4-h",
    } <= set(registry_names("radio"))
    g = ENCODERS["radio_v2.5-g"]
    assert (g.patch_size, g.max_resolution, g.preferred_resolution) == (14, 1792, 896)


def test_build_encoder_dispatches_on_the_checkpoint_not_the_name(tmp_path):
    fixture = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"
    assert isinstance(build_encoder(fixture), RadioEncoder)
    (tmp_path / "config.json").write_text('{"model_type": "siglip_vision_model"}')
    with pytest.raises(ValueError, match="not a RADIO checkpoint folder"):
        build_encoder(tmp_path)


def test_teacher_tokens_follow_the_reference_defaults_and_first_occurrences():
    """As NVlabs/RADIO's torch.hub loader: cls_token_per_teacher defaults to true, and a
    teacher's summary slot is its first position in args.teachers."""
    from encoder.radio_checkpoint import summary_idxs_from_args
    from encoder.radio_config import num_cls_tokens

    teachers = [
        {"name": "clip"},
        {"name": "clip", "use_summary": True},
        {"name": "siglip"},
        {"name": "sam", "use_summary": False},
    ]
    assert num_cls_tokens({"teachers": teachers}) == 3  # key missing: one per unique name
    assert num_cls_tokens({"teachers": teachers, "cls_token_per_teacher": False}) == 1
    assert summary_idxs_from_args({"teachers": teachers}) == [0, 2]
    assert summary_idxs_from_args({"teachers": teachers, "cls_token_per_teacher": False}) == [0]
    assert summary_idxs_from_args({}) == [0]
