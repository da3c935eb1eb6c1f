"""RADIOv2.5-g's DINOv2-student layout, against a plain-torch forward of the same weights."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from encoder import load_radio

PATCH, WIDTH, DEPTH, HEADS, PREFIX, MAX = 14, 32, 2, 2, 5, 56
HIDDEN = (int(WIDTH * 4 * 2 / 3) + 7) // 8 * 8  # DINOv2's fused SwiGLU width: 88
ARGS = {
    "model": "dino_v2_g_student",
    "model_kwargs": {"embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS},
    "cpe_max_size": MAX,
    "cls_token_per_teacher": True,
    "register_multiple": 8,
    "teachers": [{"name": "clip"}, {"name": "siglip"}, {"name": "dino_v2"}],
}


def student_state(seed: int = 0, layer_scale_key: str = "grandma") -> dict[str, torch.Tensor]:
    """Random weights in the hub layout of RADIOv2.5-g (LayerScale far from 1)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    inner = {
        "patch_generator.embedder.weight": rand(WIDTH, 3 * PATCH * PATCH, scale=0.05),
        "patch_generator.embedder.bias": rand(WIDTH),
        "patch_generator.pos_embed": rand(1, (MAX // PATCH) ** 2, WIDTH),
        "patch_generator.cls_token.token": rand(PREFIX, WIDTH),
        "norm.weight": 1 + rand(WIDTH),
        "norm.bias": rand(WIDTH),
        "mask_token": rand(1, WIDTH),
    }
    for i in range(DEPTH):
        b = f"blocks.{i}."
        inner |= {
            b + "norm1.weight": 1 + rand(WIDTH),
            b + "norm1.bias": rand(WIDTH),
            b + "attn.qkv.weight": rand(3 * WIDTH, WIDTH),
            b + "attn.qkv.bias": rand(3 * WIDTH),
            b + "attn.proj.weight": rand(WIDTH, WIDTH),
            b + "attn.proj.bias": rand(WIDTH),
            b + f"ls1.{layer_scale_key}": 0.5 + rand(WIDTH),
            b + "norm2.weight": 1 + rand(WIDTH),
            b + "norm2.bias": rand(WIDTH),
            b + "mlp.w12.weight": rand(2 * HIDDEN, WIDTH),
            b + "mlp.w12.bias": rand(2 * HIDDEN),
            b + "mlp.w3.weight": rand(WIDTH, HIDDEN),
            b + "mlp.w3.bias": rand(WIDTH),
            b + f"ls2.{layer_scale_key}": 0.5 + rand(WIDTH),
        }
    state = {f"radio_model.model.inner.{k}": v for k, v in inner.items()}
    state["radio_model.input_conditioner.norm_mean"] = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)
    state["radio_model.input_conditioner.norm_std"] = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    state["radio_model.summary_idxs"] = torch.tensor([0, 1, 2])  # ignored by the reference
    return state


def reference_forward(state: dict[str, torch.Tensor], pixels: torch.Tensor):
    """DINOv2 student as the reference computes it, written out in plain torch."""
    w = {k.removeprefix("radio_model.model.inner."): v for k, v in state.items()}
    b, _, height, width = pixels.shape
    h, wd = height // PATCH, width // PATCH
    mean = state["radio_model.input_conditioner.norm_mean"]
    std = state["radio_model.input_conditioner.norm_std"]
    x = (pixels - mean) / std
    patches = x.reshape(b, 3, h, PATCH, wd, PATCH).permute(0, 2, 4, 1, 3, 5).flatten(3)
    tokens = patches.flatten(1, 2) @ w["patch_generator.embedder.weight"].T
    tokens = tokens + w["patch_generator.embedder.bias"]
    # CPE: resize the position table to a square of the longer side, keep the top-left h x w
    side = MAX // PATCH
    pos = w["patch_generator.pos_embed"].reshape(1, side, side, WIDTH).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(max(h, wd),) * 2, mode="bilinear", align_corners=False)
    tokens = tokens + pos[..., :h, :wd].flatten(2).transpose(1, 2)
    t = torch.cat([w["patch_generator.cls_token.token"].expand(b, -1, -1), tokens], dim=1)

    def ln(x, name, eps=1e-6):
        return F.layer_norm(x, (WIDTH,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

    for i in range(DEPTH):
        p = f"blocks.{i}."
        y = ln(t, p + "norm1") @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
        q, k, v = y.unflatten(-1, (3, HEADS, WIDTH // HEADS)).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / (WIDTH // HEADS) ** 0.5, dim=-1) @ v
        attn = attn.transpose(1, 2).flatten(2) @ w[p + "attn.proj.weight"].T
        t = t + w[p + "ls1.grandma"] * (attn + w[p + "attn.proj.bias"])
        x12 = ln(t, p + "norm2") @ w[p + "mlp.w12.weight"].T + w[p + "mlp.w12.bias"]
        gate, up = x12.chunk(2, dim=-1)
        mlp = (F.silu(gate) * up) @ w[p + "mlp.w3.weight"].T + w[p + "mlp.w3.bias"]
        t = t + w[p + "ls2.grandma"] * mlp
    hidden = t
    t = ln(t, "norm")
    return t[:, 0], t[:, PREFIX:], hidden


def write_hub_folder(path, state, args=ARGS):
    path.mkdir()
    (path / "config.json").write_text(
        json.dumps({"args": args, "version": "radio_v2.5-g", "patch_size": PATCH})
    )
    save_file(state, path / "model.safetensors")
    return path


@pytest.mark.parametrize("size", [(56, 56), (28, 42), (42, 14)])
def test_student_matches_a_plain_forward_of_its_weights(tmp_path, size):
    state = student_state()
    enc = load_radio(write_hub_folder(tmp_path / "g", state), feature_layers=None)
    assert enc.config.use_swiglu_ffn and enc.patch_size == PATCH
    assert enc.preferred_resolution == (896, 896)  # the registry's: config.json names the version
    assert (enc.config.num_cls_tokens, enc.config.num_registers) == (1, PREFIX - 1)
    pixels = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = enc(pixels, output_hidden_states=True)
    summary, features, last_block = reference_forward(state, pixels)
    h, w = size[0] // PATCH, size[1] // PATCH
    torch.testing.assert_close(out.summary, summary, rtol=0, atol=2e-5)
    torch.testing.assert_close(out.grid, features.reshape(2, h, w, WIDTH), rtol=0, atol=2e-5)
    # per-block outputs are not normalised (reference forward_intermediates, norm=False)
    last = last_block[:, PREFIX:].reshape(2, h, w, WIDTH)
    torch.testing.assert_close(out.hidden_states[-1], last, rtol=0, atol=2e-5)


def test_layer_scale_is_applied_not_defaulted_to_one(tmp_path):
    state = student_state()
    ones = {k: torch.ones_like(v) if ".ls" in k else v for k, v in state.items()}
    x = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        scaled = load_radio(write_hub_folder(tmp_path / "a", state))(x).grid
        unscaled = load_radio(write_hub_folder(tmp_path / "b", ones))(x).grid
    assert (scaled - unscaled).abs().max() > 1e-2


def test_gamma_naming_and_torch_hub_file_load_the_same_model(tmp_path):
    hub = load_radio(write_hub_folder(tmp_path / "hub", student_state()))
    gamma = {
        k.replace("radio_model.model.", "base_model.").replace("radio_model.", ""): v
        for k, v in student_state(layer_scale_key="gamma").items()
        if not k.endswith("summary_idxs")
    }
    path = tmp_path / "radio-v2.5-g.pth.tar"
    torch.save({"args": argparse.Namespace(**ARGS), "state_dict_ema": gamma}, path)
    from_file = load_radio(path)
    x = torch.rand(1, 3, 42, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(from_file(x).grid, hub(x).grid, rtol=0, atol=0)
        torch.testing.assert_close(from_file(x).summary, hub(x).summary, rtol=0, atol=0)


def test_missing_layer_scale_or_extra_tensors_refuse_to_load(tmp_path):
    state = student_state()
    del state["radio_model.model.inner.blocks.1.ls2.grandma"]
    with pytest.raises(ValueError, match=r"no LayerScale .*blocks\.1\.ls2\.grandma.*silently"):
        load_radio(write_hub_folder(tmp_path / "no-ls", state))
    state = student_state() | {"radio_model.model.inner.blocks.2.norm1.weight": torch.ones(WIDTH)}
    with pytest.raises(ValueError, match=r"does not use: \['blocks\.2\.norm1\.weight'\]"):
        load_radio(write_hub_folder(tmp_path / "deeper", state))
    state = student_state()
    del state["radio_model.model.inner.norm.bias"]
    with pytest.raises(ValueError, match=r"has no 'radio_model\.model\.inner\.norm\.bias'"):
        load_radio(write_hub_folder(tmp_path / "no-norm", state))


def test_packed_mixed_sizes_apply_the_final_norm_per_image(tmp_path):
    state = student_state()
    enc = load_radio(write_hub_folder(tmp_path / "g", state))
    gen = torch.Generator().manual_seed(4)
    images = [torch.rand(3, 56, 56, generator=gen), torch.rand(3, 28, 42, generator=gen)]
    with torch.no_grad():
        outs = enc.encode(images)
    for image, out in zip(images, outs, strict=True):
        summary, features, _ = reference_forward(state, image.unsqueeze(0))
        torch.testing.assert_close(out.summary, summary, rtol=0, atol=2e-5)
        torch.testing.assert_close(out.grid.flatten(1, 2), features, rtol=0, atol=2e-5)


def test_blockwise_tome_without_merging_applies_the_final_norm(tmp_path):
    state = student_state()
    folder = write_hub_folder(tmp_path / "g", state)
    x = torch.rand(1, 3, 28, 42, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = load_radio(folder, blockwise_tome=6)(x)
    summary, features, _ = reference_forward(state, x)
    torch.testing.assert_close(out.summary, summary, rtol=0, atol=2e-5)
    torch.testing.assert_close(out.compressed.tokens, features, rtol=0, atol=2e-5)
