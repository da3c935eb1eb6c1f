"""SigLIP / SigLIP2 / CLIP / DINOv2 towers against the transformers models they wrap, and
``build_encoder``'s dispatch. Tiny random checkpoints; nothing touches the network."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import torch
from tower_helpers import PREFIX, as_grid, images, normalised, reference
from transformers import (
    CLIPModel,
    Siglip2Model,
    SiglipModel,
)
from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

import encoder.registry
from encoder import (
    ENCODERS,
    ClipTower,
    Dinov2Tower,
    HFVisionTower,
    RegisteredEncoder,
    Siglip2NaflexTower,
    SiglipTower,
    build_encoder,
    load_tower,
    registry_names,
)
from encoder.tiny import (
    DEPTH,
    FAMILIES,
    PATCH,
    RAW_CLASSES,
    WIDTH,
    tiny_tower_checkpoint,
)

FULL_CLASSES = {"clip": CLIPModel, "siglip": SiglipModel, "siglip2": Siglip2Model}
TOWER_CLASSES = {
    "clip": ClipTower,
    "siglip": SiglipTower,
    "siglip2": Siglip2NaflexTower,
    "dinov2": Dinov2Tower,
    "dinov2_reg": Dinov2Tower,
}
DEFAULT_NORM = {  # the families' published preprocessing
    "clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    "siglip2": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    "dinov2": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "dinov2_reg": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
CLOSE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def towers(folders) -> dict[str, HFVisionTower]:
    return {family: load_tower(folder) for family, folder in folders.items()}


# ------------------------------------------------------------------- against transformers


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(40, 24), (32, 32)])  # non-square and non-default; native
def test_forward_equals_the_transformers_model(family, size, raws, towers):
    pixels = images(2, 3, *size)
    out = towers[family](pixels, output_hidden_states=True)
    ref = reference(family, raws[family], normalised(pixels), output_hidden_states=True)
    h, w = size[0] // PATCH, size[1] // PATCH
    assert out.grid.shape == (2, h, w, WIDTH)
    assert torch.equal(out.grid, as_grid(ref.last_hidden_state, PREFIX[family], h, w))
    assert torch.equal(out.summary, ref.pooler_output)
    assert len(out.hidden_states) == DEPTH
    for mine, theirs in zip(out.hidden_states, ref.hidden_states[1:], strict=True):
        assert torch.equal(mine, as_grid(theirs, PREFIX[family], h, w))
    # a transposed grid would have the same shape for a square image; check a corner patch
    tokens = ref.last_hidden_state[:, PREFIX[family] :]
    assert torch.equal(out.grid[:, 0, w - 1], tokens[:, w - 1])
    assert towers[family](pixels).hidden_states is None


@pytest.mark.parametrize("family", FAMILIES)
def test_attributes(family, towers):
    tower = towers[family]
    assert type(tower) is TOWER_CLASSES[family]
    assert tower.patch_size == PATCH
    assert tower.hidden_size == WIDTH
    assert tower.preferred_resolution == (32, 32)
    assert tower.max_resolution == 1024  # max(4 * 32, 1024)
    assert tower.max_resolution % tower.patch_size == 0


def test_max_resolution_is_4x_the_native_side_floored_to_the_patch(tmp_path):
    dino = load_tower(
        tiny_tower_checkpoint(tmp_path / "d", "dinov2", image_size=518, patch_size=14)
    )
    assert (dino.preferred_resolution, dino.max_resolution) == ((518, 518), 2072)
    clip = load_tower(tiny_tower_checkpoint(tmp_path / "c", "clip", image_size=56, patch_size=14))
    assert clip.max_resolution == 1022  # 1024 floored to a multiple of 14


def test_siglip2_naflex_native_side_comes_from_num_patches(tmp_path):
    tower = load_tower(tiny_tower_checkpoint(tmp_path / "n", "siglip2", num_patches=36))
    assert tower.preferred_resolution == (6 * PATCH, 6 * PATCH)


def test_siglip_without_pooling_head_has_no_summary(tmp_path):
    tower = load_tower(tiny_tower_checkpoint(tmp_path / "s", "siglip", vision_use_head=False))
    assert tower(images(1, 3, 16, 24)).summary is None


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_full_dual_encoder_checkpoints_load_their_vision_part(family, tmp_path):
    folder = tiny_tower_checkpoint(tmp_path / family, family, full=True)
    tower = build_encoder(folder)
    assert type(tower) is TOWER_CLASSES[family]
    vision = FULL_CLASSES[family].from_pretrained(folder).eval().vision_model
    pixels = images(1, 3, 24, 40)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in DEFAULT_NORM[family])
    x = (pixels - mean) / std
    if family == "siglip2":
        patches = convert_image_to_patches(x[0], PATCH)[None]
        ones = torch.ones(1, 15, dtype=torch.long)
        ref = vision(patches, pixel_attention_mask=ones, spatial_shapes=torch.tensor([[3, 5]]))
    else:
        ref = vision(x, interpolate_pos_encoding=True)
    out = tower(pixels)
    assert torch.equal(out.grid, as_grid(ref.last_hidden_state, PREFIX[family], 3, 5))
    assert torch.equal(out.summary, ref.pooler_output)


# ------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("family", FAMILIES)
def test_without_preprocessor_config_the_family_defaults_apply(family, tmp_path):
    tower = load_tower(tiny_tower_checkpoint(tmp_path / family, family))
    mean, std = DEFAULT_NORM[family]
    assert torch.allclose(tower.image_mean.flatten(), torch.tensor(mean))
    assert torch.allclose(tower.image_std.flatten(), torch.tensor(std))


def test_preprocessor_without_normalisation_and_explicit_overrides(tmp_path):
    plain = {"do_normalize": False, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    tower = load_tower(tiny_tower_checkpoint(tmp_path / "a", "dinov2", preprocessor=plain))
    pixels = images(1, 3, 16, 16)
    assert torch.equal(tower.normalize(pixels), pixels)
    tower = load_tower(tmp_path / "a", image_mean=[0.25] * 3, image_std=[2.0] * 3)
    assert torch.equal(tower.normalize(pixels), (pixels - 0.25) / 2.0)
    with pytest.raises(ValueError, match="image_std must be positive"):
        load_tower(tmp_path / "a", image_std=[1.0, 0.0, 1.0])


# ------------------------------------------------------------------- feature selection


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_layers_concatenate_the_chosen_blocks(family, folders, raws, towers):
    pixels = images(2, 3, 24, 40, seed=1)
    hidden = towers[family](pixels, output_hidden_states=True).hidden_states
    two = load_tower(folders[family], feature_layers=[0, -1])
    assert two.hidden_size == 2 * WIDTH
    assert torch.equal(two(pixels).grid, torch.cat([hidden[0], hidden[-1]], dim=-1))
    llava = load_tower(folders[family], feature_layers=[-2])  # the penultimate block
    ref = reference(family, raws[family], normalised(pixels), output_hidden_states=True)
    assert torch.equal(llava(pixels).grid, as_grid(ref.hidden_states[-2], PREFIX[family], 3, 5))


@pytest.mark.parametrize(
    "layers,message",
    [
        ([], r"block indices in \[-3, 2\]"),
        ([3], r"block indices in \[-3, 2\]; got \[3\]"),
        ([-4, 0], r"block indices in \[-3, 2\]"),
        ([1, 0], "strictly increasing"),
        ([2, -1], "strictly increasing"),  # the same block twice
    ],
)
def test_bad_feature_layers_are_refused(layers, message, folders):
    with pytest.raises(ValueError, match=message):
        load_tower(folders["clip"], feature_layers=layers)


def test_dense_aggregation_is_radio_only(folders):
    with pytest.raises(ValueError, match=r"aggregation='dense'.* RADIO's.*aggregation='sparse'"):
        build_encoder(folders["clip"], feature_layers=[1], aggregation="dense")


@pytest.mark.parametrize("family", ["clip", "siglip2", "dinov2"])
def test_sizes_must_be_multiples_of_the_patch(family, towers):
    with pytest.raises(ValueError, match="30x32 is not a multiple of the patch size 8"):
        towers[family](images(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\[B >= 1, 3, H, W\]"):
        towers[family](images(1, 1, 32, 32))


# ------------------------------------------------------------------- batches of any size


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_of_mixed_sizes_equals_per_image_forward(family, folders):
    tower = load_tower(folders[family], feature_layers=[1, 2])
    batch = [images(3, 40, 24, seed=2), images(3, 32, 32, seed=3), images(3, 40, 24, seed=4)]
    batch.append(images(3, 16, 48, seed=5))
    outs = tower.encode(batch)
    for image, out in zip(batch, outs, strict=True):
        alone = tower(image[None])
        assert out.grid.shape == alone.grid.shape == (1, *alone.grid.shape[1:])
        torch.testing.assert_close(out.grid, alone.grid, **CLOSE)
        torch.testing.assert_close(out.summary, alone.summary, **CLOSE)
    assert tower.encode([]) == []


# ------------------------------------------------------------------- loading options


def test_dtype_and_attention_implementation(folders, towers):
    pixels = images(1, 3, 24, 16)
    half = load_tower(folders["siglip"], dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.image_mean.dtype == torch.float32  # normalisation stays exact
    assert half(pixels).grid.dtype == torch.bfloat16
    eager = load_tower(folders["dinov2_reg"], attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    torch.testing.assert_close(eager(pixels).grid, towers["dinov2_reg"](pixels).grid, **CLOSE)


@pytest.mark.parametrize("family", FAMILIES)
def test_get_config_rebuilds_the_same_tower(family, folders):
    tower = load_tower(folders[family], feature_layers=[0, 2])
    config = json.loads(json.dumps(tower.get_config()))  # a VLM config stores it as JSON
    rebuilt = HFVisionTower.from_config(config)
    assert type(rebuilt) is TOWER_CLASSES[family] and type(rebuilt.model) is RAW_CLASSES[family]
    rebuilt.load_state_dict(tower.state_dict())  # normalisation buffers included
    pixels = images(1, 3, 24, 40)
    assert torch.equal(rebuilt(pixels).grid, tower(pixels).grid)
    assert (rebuilt.hidden_size, rebuilt.max_resolution) == (2 * WIDTH, tower.max_resolution)
    with torch.device("meta"):  # how a VLM skeleton is built before its weights load
        assert HFVisionTower.from_config(config).image_mean.is_meta
    with pytest.raises(ValueError, match="unknown tower family 'vit'"):
        HFVisionTower.from_config({**config, "family": "vit"})


def test_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(ValueError, match="no weights"):
        load_tower(tmp_path)


# ------------------------------------------------------------------- build_encoder


@pytest.mark.parametrize("family", FAMILIES)
def test_build_encoder_dispatches_folders_on_model_type(family, folders):
    tower = build_encoder(folders[family], feature_layers=[-2])
    assert type(tower) is TOWER_CLASSES[family]
    assert type(tower.model) is RAW_CLASSES[family]
    assert tower.feature_layers == [DEPTH - 2]


def test_build_encoder_refuses_unknown_model_types_and_bare_folders(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match=r"model_type 'vit'.*supported model types: clip, "):
        build_encoder(tmp_path)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match=r"bare has no config\.json"):
        build_encoder(tmp_path / "bare")


def test_registry_names_map_to_hub_ids_and_go_to_load_tower(monkeypatch):
    hub_ids = {
        "siglip-so400m-patch14-384": "google/siglip-so400m-patch14-384",
        "siglip2-so400m-patch16-512": "google/siglip2-so400m-patch16-512",
        "siglip2-so400m-patch16-naflex": "google/siglip2-so400m-patch16-naflex",
        "clip-vit-l-336": "openai/clip-vit-large-patch14-336",
        "clip-vit-l": "openai/clip-vit-large-patch14",
        "dinov2-g": "facebook/dinov2-giant",
        "dinov2-l-reg": "facebook/dinov2-with-registers-large",
    }
    for name, hub_id in hub_ids.items():
        assert ENCODERS[name] == RegisteredEncoder("tower", hub_id), name
    assert {"radio_v2.5-h", "clip-vit-l-336", "dinov2-l"} <= set(registry_names())
    calls = []
    monkeypatch.setattr(encoder.registry, "load_tower", lambda spec, **kw: calls.append((spec, kw)))
    build_encoder("clip-vit-l-336", feature_layers=[-2])
    assert calls == [("clip-vit-l-336", {"feature_layers": [-2]})]


def test_build_encoder_reads_only_config_json_to_dispatch_hub_ids(monkeypatch, tmp_path):
    configs = {
        "someone/tiny-dino": {"model_type": "dinov2"},
        "someone/radio": {"args": {"model": "vit_base_patch16_224"}},
        "someone/vit": {"model_type": "vit"},
    }

    def fake_download(repo_id, filename, **kwargs):
        assert filename == "config.json"
        if repo_id not in configs:
            raise OSError("no connection")
        path = tmp_path / repo_id.replace("/", "--")
        path.write_text(json.dumps(configs[repo_id]))
        return str(path)

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(encoder.registry, "load_tower", lambda s, **kw: calls.append(("tower", s)))
    monkeypatch.setattr(encoder.registry, "load_radio", lambda s, **kw: calls.append(("radio", s)))
    build_encoder("someone/tiny-dino")
    build_encoder("someone/radio")
    assert calls == [("tower", "someone/tiny-dino"), ("radio", "someone/radio")]
    with pytest.raises(ValueError, match="model_type 'vit'"):
        build_encoder("someone/vit")
    with pytest.raises(
        ValueError, match=r"'someone/missing'.*OSError: no connection.*Registry names:.*dinov2-l"
    ):
        build_encoder("someone/missing")
    with pytest.raises(ValueError, match=r"'elsewhere/none'.*Registry names:.*clip-vit-l-336"):
        load_tower("elsewhere/none")


def test_an_unreachable_hub_id_names_the_problem_and_the_registry(monkeypatch):
    from encoder import build_encoder, hf_tower_checkpoint

    def offline(repo_id, filename):
        raise ConnectionError("no network")

    monkeypatch.setattr(hf_tower_checkpoint, "fetch_hub_file", offline)
    with pytest.raises(
        ValueError,
        match=r"cannot build an encoder from 'someone/radio-x': it is "
        r"not a registry name.*config.json from the hub failed \(ConnectionError: "
        r"no network\)\. Registry names: .*radio_v2\.5-h",
    ):
        build_encoder("someone/radio-x")
    with pytest.raises(
        ValueError,
        match=r"cannot load a vision tower from 'someone/clip-x'.*"
        r"Registry names: .*clip-vit-l-336",
    ):
        load_tower("someone/clip-x")
