"""The b-like RADIOv2.5 fixture (reference NVlabs/RADIO outputs) through the public loader."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from encoder.radio_checkpoint import hub_state_dict, load_radio

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"
EXPECTED = torch.load(FIXTURE / "expected.pt", weights_only=True)["results"]
RESOLUTIONS = sorted(EXPECTED)
ADAPTORS = ["clip", "siglip", "dino_v2", "sam"]
TOL = {"rtol": 0, "atol": 1e-5}


def pixels(resolution: str) -> torch.Tensor:
    return EXPECTED[resolution]["pixel_values_uint8"].float() / 255


@pytest.fixture(scope="module")
def encoder():
    return load_radio(FIXTURE, adaptor_names=ADAPTORS)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_summary_features_and_adaptors_match_the_reference(encoder, resolution):
    ref = EXPECTED[resolution]
    x = pixels(resolution)
    with torch.no_grad():
        out = encoder(x)
    h, w = x.shape[2] // 16, x.shape[3] // 16
    torch.testing.assert_close(out.summary, ref["summary"], **TOL)
    torch.testing.assert_close(out.grid, ref["features"].reshape(2, h, w, 64), **TOL)
    assert set(out.adaptors) == set(ADAPTORS)
    for name in ADAPTORS:
        torch.testing.assert_close(
            out.adaptors[name].summary, ref["adaptors"][name]["summary"], **TOL
        )
        torch.testing.assert_close(
            out.adaptors[name].grid.reshape(2, h * w, -1), ref["adaptors"][name]["features"], **TOL
        )


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("aggregation", ["sparse", "dense"])
def test_intermediates_match_the_reference(encoder, resolution, aggregation):
    x = pixels(resolution)
    with torch.no_grad():
        outs = encoder.forward_intermediates(x, [1, 3], aggregation)
    for out, ref in zip(outs, EXPECTED[resolution]["intermediates"][aggregation], strict=True):
        torch.testing.assert_close(out.summary, ref["summary"], **TOL)
        torch.testing.assert_close(out.grid.flatten(1, 2), ref["features"], **TOL)


def test_feature_layers_concatenate_selected_blocks():
    enc = load_radio(FIXTURE, feature_layers=[1, -1], aggregation="dense")
    assert enc.hidden_size == 128
    x = pixels("128x96")
    with torch.no_grad():
        grid = enc(x).grid
    refs = EXPECTED["128x96"]["intermediates"]["dense"]
    expected = torch.cat([r["features"] for r in refs], dim=-1).reshape(2, 8, 6, 128)
    torch.testing.assert_close(grid, expected, **TOL)


def test_dense_aggregation_needs_feature_layers():
    # it used to be ignored silently: the final features came back
    with pytest.raises(ValueError, match=r"aggregation='dense'.*give feature_layers too"):
        load_radio(FIXTURE, aggregation="dense")


def test_config_is_translated_from_args_not_defaulted(encoder):
    cfg = encoder.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 4, 4)
    assert (cfg.num_cls_tokens, cfg.num_registers, cfg.max_img_size) == (4, 4, 512)
    assert cfg.summary_idxs == [0, 1, 2]
    state = load_file(FIXTURE / "model.safetensors")
    assert cfg.norm_mean == pytest.approx(
        state["radio_model.input_conditioner.norm_mean"].flatten().tolist()
    )
    assert encoder.patch_size == 16 and encoder.preferred_resolution == (224, 224)
    assert encoder.version == "radio_v2.5-b"


def torch_hub_layout(
    hub_state: dict[str, torch.Tensor], teachers: list[str]
) -> dict[str, torch.Tensor]:
    """The training-time key layout of a torch.hub .pth.tar (heads by teacher index or name)."""
    out = {}
    for key, value in hub_state.items():
        key = key.removeprefix("radio_model.")
        if key == "summary_idxs":
            continue  # torch.hub files do not store it
        if key.startswith("model."):
            key = "base_model." + key.removeprefix("model.")
        elif key.startswith("adaptors."):
            _, name, head, rest = key.split(".", 3)
            key = (
                f"_heads.{teachers.index(name)}.{rest}"
                if head == "head_mlp"
                else f"_feature_projections.{name}.{rest}"
            )
        out[key] = value
    return out


def test_torch_hub_checkpoint_loads_to_the_same_model(tmp_path, encoder):
    """A .pth.tar as torch.hub ships it: args Namespace + state dicts, EMA preferred."""
    args = json.loads((FIXTURE / "config.json").read_text())["args"]
    state = torch_hub_layout(
        load_file(FIXTURE / "model.safetensors"), [t["name"] for t in args["teachers"]]
    )
    broken = {k: torch.zeros_like(v) for k, v in state.items()}  # must not be picked over EMA
    path = tmp_path / "radio-b.pth.tar"
    ema = {f"module.{k}": v for k, v in state.items()}
    torch.save(
        {
            "args": argparse.Namespace(**args, dtype_=torch.float32),
            "state_dict": broken,
            "state_dict_ema": ema,
        },
        path,
    )
    hub = load_radio(path, adaptor_names=ADAPTORS)  # adaptor dims inferred from the weights
    assert hub.config.summary_idxs == [0, 1, 2]  # computed from the teachers (sam has no summary)
    x = pixels("64x64")
    with torch.no_grad():
        out, ref = hub(x), encoder(x)
    torch.testing.assert_close(out.grid, ref.grid, rtol=0, atol=0)
    torch.testing.assert_close(out.summary, EXPECTED["64x64"]["summary"], **TOL)
    for name in ADAPTORS:
        torch.testing.assert_close(
            out.adaptors[name].summary, ref.adaptors[name].summary, rtol=0, atol=0
        )
        torch.testing.assert_close(out.adaptors[name].grid, ref.adaptors[name].grid, rtol=0, atol=0)


class Payload:
    """Not on the allow-list: unpickling it would run arbitrary code paths."""


def test_torch_hub_loading_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"args": Payload(), "state_dict": {}}, path)
    with pytest.raises(Exception, match=r"Weights only load failed|Unsupported global"):
        load_radio(path)


def test_hub_state_dict_keys():
    args = {
        "teachers": [{"name": "clip"}, {"name": "sam", "use_summary": False}],
        "cls_token_per_teacher": True,
    }
    state = {
        "module.base_model.blocks.0.norm1.weight": torch.ones(1),
        "_heads.1.fc1.weight": torch.ones(1),
        "_feature_projections.clip.fc1.weight": torch.ones(1),
        "_intermediate_feature_normalizer.alphas": torch.ones(1),
        "optimizer_step": torch.ones(1),
    }
    converted = hub_state_dict(state, args)
    assert sorted(converted) == [
        "radio_model.adaptors.clip.feat_mlp.fc1.weight",
        "radio_model.adaptors.sam.head_mlp.fc1.weight",
        "radio_model.inter_feature_normalizer.alphas",
        "radio_model.model.blocks.0.norm1.weight",
        "radio_model.summary_idxs",
    ]
    assert converted["radio_model.summary_idxs"].tolist() == [0]


def test_bad_sources_and_options_fail_with_a_clear_message(tmp_path, encoder):
    folder = tmp_path / "not-radio"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "radio"}))
    with pytest.raises(ValueError, match="has no 'args': not a RADIO hub checkpoint"):
        load_radio(folder)
    weird = tmp_path / "weird"
    shutil.copytree(FIXTURE, weird)
    config = json.loads((weird / "config.json").read_text())
    config["args"]["model"] = "vit_mystery_patch16"
    (weird / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"unknown RADIO architecture .*vit_mystery_patch16.*known:.*num_hidden_layers",
    ):
        load_radio(weird)
    # ... and with the dims given as overrides it loads
    assert (
        load_radio(weird, hidden_size=64, num_hidden_layers=4, num_attention_heads=4).hidden_size
        == 64
    )
    with pytest.raises(ValueError, match=r"adaptor_names \['clipp'\] are not in this checkpoint"):
        load_radio(FIXTURE, adaptor_names=["clipp"])
    with pytest.raises(ValueError, match=r"block indices in \[-4, 3\]; got \[4\]"):
        load_radio(FIXTURE, feature_layers=[4])
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        encoder(torch.rand(1, 3, 40, 64))
    with pytest.raises(ValueError, match="divide uint8 images by 255"):
        encoder(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_normalizers_follow_the_reference_math(tmp_path):
    """PHI-S on the final features (before the adaptors) and the per-block intermediate
    normaliser (cls/registers untouched; dense: mean alpha times mean of the normalised)."""
    folder = tmp_path / "norm"
    shutil.copytree(FIXTURE, folder)
    state = load_file(folder / "model.safetensors")
    gen = torch.Generator().manual_seed(0)
    d, depth = 64, 4
    extra = {
        "feature_normalizer.mean": torch.randn(d, generator=gen),
        "feature_normalizer.tx": torch.randn(d, d, generator=gen) / 8,
        "inter_feature_normalizer.alphas": torch.rand(depth, generator=gen) + 0.5,
        "inter_feature_normalizer.means": torch.randn(depth, d, generator=gen),
        "inter_feature_normalizer.rotation": torch.randn(depth, d, d, generator=gen) / 8,
    }
    save_file(
        state | {f"radio_model.{k}": v for k, v in extra.items()}, folder / "model.safetensors"
    )
    normed = load_radio(folder, adaptor_names=["clip"])
    x = pixels("64x64")
    with torch.no_grad():
        raw = normed.model(x, output_hidden_states=True)
        out = normed(x)
        sparse = normed.forward_intermediates(x, [1, 3], "sparse")
        dense = normed.forward_intermediates(x, [1, 3], "dense")
    blocks, skip, idx = raw.hidden_states[1:], 8, [0, 1, 2]
    phi_s = (raw.features - extra["feature_normalizer.mean"]) @ extra["feature_normalizer.tx"].T
    torch.testing.assert_close(out.grid.flatten(1, 2), phi_s)
    clip = normed.adaptors["clip"].feat_mlp(phi_s)
    torch.testing.assert_close(out.adaptors["clip"].grid.flatten(1, 2), clip)

    alphas, means, rot = (
        extra[f"inter_feature_normalizer.{k}"] for k in ("alphas", "means", "rotation")
    )

    def y(i, r):
        return (blocks[i][:, skip:] - means[i]) @ rot[r].T

    torch.testing.assert_close(sparse[0].grid.flatten(1, 2), alphas[1] * y(1, 1))
    torch.testing.assert_close(sparse[0].summary, blocks[1][:, idx].flatten(1))
    group = [2, 3]  # the second group ends at block 3 and uses its rotation
    expected = alphas[group].mean() * torch.stack([y(i, 3) for i in group]).mean(0)
    torch.testing.assert_close(dense[1].grid.flatten(1, 2), expected)
    prefix = torch.stack([blocks[i][:, :4] for i in group]).mean(0)
    torch.testing.assert_close(dense[1].summary, prefix[:, idx].flatten(1))


@pytest.mark.parametrize("feature_layers", [None, [1, -1]])
def test_mixed_sizes_take_the_packed_path_and_match_one_by_one(feature_layers):
    """encode([...]) packs images of different sizes into one sequence (image_grid_hw); each
    image must come out as if it had been run alone, adaptors and chosen layers included."""
    enc = load_radio(FIXTURE, adaptor_names=["clip", "sam"], feature_layers=feature_layers)
    images = [pixels("128x96")[0], pixels("64x64")[1], pixels("224x224")[0], pixels("64x64")[0]]
    calls = []
    hook = enc.model.embeddings.register_forward_hook(lambda m, args, out: calls.append(args))
    with torch.no_grad():
        packed = enc.encode(images)
        hook.remove()
        alone = [enc(image.unsqueeze(0)) for image in images]
    assert len(calls) == 1 and calls[0][1] is not None  # one packed call with image_grid_hw
    for out, ref in zip(packed, alone, strict=True):
        assert out.grid.shape == ref.grid.shape
        torch.testing.assert_close(out.summary, ref.summary, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.grid, ref.grid, rtol=0, atol=1e-5)
        for name in ("clip", "sam"):
            torch.testing.assert_close(
                out.adaptors[name].grid, ref.adaptors[name].grid, atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                out.adaptors[name].summary, ref.adaptors[name].summary, atol=1e-5, rtol=0
            )
