"""Tiling in the VLM: the processor cuts each image into tiles (+ thumbnail), every tile is
compressed on its own, and the processor and the model agree on the token counts; training,
generation and save/load work with it."""

from __future__ import annotations

import json

import pytest
import torch
from image_kit import noise

import vlm
from encoder.tiling import tile_image
from encoder.tiny import write_tiny_radio
from vlm.tiny import tiny_llm, tiny_tokenizer

TILE = 64  # the tiny tower's resolution: 8x8 patches of 8 px per tile


@pytest.fixture(scope="module")
def radio_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("radio")
    return write_tiny_radio(folder, patch_size=8, preferred_resolution=TILE, max_resolution=128)


def chat(question: str, answer: str | None = None) -> list[dict]:
    """A user turn (one image, then the question), and the reply when given."""
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return turns + ([{"role": "assistant", "content": answer}] if answer else [])


def build(radio_dir, compressor="tome", num_tokens=4, tiling=None, **kwargs):
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)  # room for the image tokens
    tiling = {"max_tiles": 4} if tiling is None else tiling
    return vlm.build_vlm(
        radio_dir,
        llm,
        tokenizer=tokenizer,
        compressor=compressor,
        num_tokens=num_tokens,
        tiling=tiling,
        **kwargs,
    )


# (method, build options, tokens per 64 px tile: an 8x8 grid)
COMPRESSORS = [
    ("tome", {"num_tokens": 4}, 4),
    ("avgpool", {"num_tokens": 4}, 4),
    ("unshuffle", {"num_tokens": None, "compressor_options": {"scale": 2}}, 16),
    ("none", {"num_tokens": None}, 64),
]
# (H, W) -> tiles with max_tiles=4, thumbnail included (InternVL's rule, worked by hand)
SIZES = {
    (64, 64): 1,  # 1x1: too few pixels for 2x2
    (128, 128): 5,  # 2x2 + thumbnail
    (64, 160): 4,  # 2.5: 2x1 and 3x1 tie, enough pixels for 3x1; + thumbnail
    (150, 50): 4,  # 1:3 -> 1 col x 3 rows + thumbnail
    (96, 128): 5,  # 4:3: 1x1 and 2x2 tie (1.0), enough pixels for 2x2; + thumbnail
    (96, 200): 3,  # ~2.08 -> 2x1 + thumbnail
}


@pytest.mark.parametrize(
    ("method", "options", "per_tile"), COMPRESSORS, ids=[c[0] for c in COMPRESSORS]
)
def test_placeholders_equal_projected_features_for_every_aspect(
    radio_dir, method, options, per_tile
):
    model, processor = build(radio_dir, method, **options)
    sizes = list(SIZES)
    images = [[noise(h, w, seed=i)] for i, (h, w) in enumerate(sizes)]
    batch = processor(images=images, conversations=[chat("What is it?", "A cat.")] * len(sizes))
    tiles = [SIZES[size] for size in sizes]
    assert tuple(batch["pixel_values"].shape) == (sum(tiles), 3, TILE, TILE)
    assert batch["image_sizes"].tolist() == [[TILE, TILE]] * sum(tiles)
    per_row = (batch["input_ids"] == model.config.image_token_id).sum(1).tolist()
    assert per_row == [n * per_tile for n in tiles]
    assert per_row == [processor.tokens_for_image(h, w) for h, w in sizes]
    with torch.no_grad():
        features = model.get_image_features(batch["pixel_values"])
    assert [f.shape[0] for f in features] == [per_tile] * sum(tiles)  # one entry per tile
    assert sum(per_row) == sum(f.shape[0] for f in features)
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)


def test_tiles_are_in_raster_order_then_the_thumbnail(radio_dir):
    _, processor = build(radio_dir)
    picture = noise(128, 128, seed=3)
    batch = processor(images=[picture], conversations=chat("Hi?"), add_generation_prompt=True)
    expected, layout = tile_image(picture, tile_size=TILE, max_tiles=4)
    assert (layout.rows, layout.cols, layout.has_thumbnail) == (2, 2, True)
    torch.testing.assert_close(batch["pixel_values"], expected)


def test_image_markers_wrap_all_tiles_of_an_image_once(radio_dir):
    model, processor = build(radio_dir, image_markers=("<img>", "</img>"))
    batch = processor(images=[noise(128, 128)], conversations=chat("Hi?"))
    ids = batch["input_ids"][0].tolist()
    start, end = (
        ids.index(model.config.image_start_token_id),
        ids.index(model.config.image_end_token_id),
    )
    assert ids.count(model.config.image_start_token_id) == 1
    assert ids[start + 1 : end] == [model.config.image_token_id] * (5 * 4)


def test_save_and_load_keep_the_tiling_and_give_identical_logits(tmp_path, radio_dir):
    model, processor = build(radio_dir, tiling={"max_tiles": 4, "thumbnail": False})
    batch = processor(images=[noise(64, 160)], conversations=chat("What?", "A cat."))
    assert batch["pixel_values"].shape[0] == 3  # 3x1, no thumbnail
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    saved = {"tile_size": TILE, "min_tiles": 1, "max_tiles": 4, "thumbnail": False}
    assert json.loads((tmp_path / "config.json").read_text())["tiling"] == saved
    assert json.loads((tmp_path / "processor_config.json").read_text())["tiling"] == saved
    loaded = vlm.VisionLanguageModel.from_pretrained(tmp_path).eval()
    loaded_processor = vlm.VLMProcessor.from_pretrained(tmp_path)
    assert loaded.config.tiling == saved and loaded_processor.tiling == processor.tiling
    again = loaded_processor(images=[noise(64, 160)], conversations=chat("What?", "A cat."))
    torch.testing.assert_close(again["input_ids"], batch["input_ids"])
    with torch.no_grad():
        after = loaded(**again).logits
    torch.testing.assert_close(after, before)


def test_a_training_step_reaches_the_projector(radio_dir):
    model, processor = build(radio_dir)
    model.train()
    images = [[noise(128, 128, seed=1)], [noise(64, 160, seed=2)]]
    batch = processor(images=images, conversations=[chat("What?", "A cat.")] * 2)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.projector.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    tower = [p.grad for p in model.vision_tower.parameters() if p.grad is not None]
    assert tower and any(g.abs().sum() > 0 for g in tower)  # through every tile's encoding


def test_generate_with_tiles_greedy_and_beams(radio_dir):
    model, processor = build(radio_dir)
    images = [[noise(128, 128, seed=1)], [noise(64, 64, seed=2)]]  # 5 tiles and 1 tile
    batch = processor(
        images=images, conversations=[chat("What?"), chat("Which?")], add_generation_prompt=True
    )
    prompt = batch["input_ids"].shape[1]
    greedy = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert greedy.shape == (2, prompt + 3)
    for b, sample in enumerate(images):  # batched equals one by one (left padding)
        alone = processor(
            images=[sample], conversations=[chat("What?"), chat("Which?")][b : b + 1],
            add_generation_prompt=True,
        )  # fmt: skip
        one = model.generate(**alone, max_new_tokens=3, do_sample=False)
        assert one[0, -3:].tolist() == greedy[b, -3:].tolist()
    # beams repeat each sample's tiles as a block (the model groups rows by placeholder count)
    beams = model.generate(**batch, max_new_tokens=2, num_beams=2, num_return_sequences=2)
    assert beams.shape == (4, prompt + 2)


def test_the_model_refuses_images_that_are_not_its_tiles(radio_dir):
    model, processor = build(radio_dir)
    plain = vlm.VLMProcessor(
        processor.tokenizer, processor.image_processor, processor.compressor
    )  # the same processor without tiling
    batch = plain(images=[noise(64, 48)], conversations=chat("What?", "A cat."))
    with pytest.raises(ValueError, match=r"64x64 px tiles \(config.tiling\).*\[\(64, 48\)\]"):
        model(**batch)


def test_empty_settings_mean_the_defaults_with_tiles_of_the_encoder_resolution(radio_dir):
    model, processor = build(radio_dir, tiling={})
    assert processor.tiling.to_dict() == {
        "tile_size": TILE, "min_tiles": 1, "max_tiles": 12, "thumbnail": True,
    }  # fmt: skip
    assert model.config.tiling == processor.tiling.to_dict()


@pytest.mark.parametrize(
    ("tiling", "options", "message"),
    [
        ({"max_tile": 4}, {}, r"unknown tiling keys \['max_tile'\]; allowed: \['tile_size'"),
        ({"max_tiles": 0}, {}, r"max_tiles must be a positive integer; got 0"),
        ({"min_tiles": 3, "max_tiles": 2}, {}, r"min_tiles 3 is above max_tiles 2"),
        ({"thumbnail": "yes"}, {}, r"thumbnail must be true or false; got 'yes'"),
        ({"tile_size": 60}, {}, r"tile_size 60 must be a multiple of the encoder's patch 8"),
        ({"tile_size": 256}, {}, r"tile_size 256 .* at most its max_resolution 128"),
        ({"tile_size": 8}, {"num_tokens": 4}, r"8x8 .*a 1x1 patch grid.*cannot be compressed"),
        ("4", {}, r"tiling must be null or a mapping with keys"),
    ],
)
def test_bad_tiling_settings_are_clear_errors(radio_dir, tiling, options, message):
    with pytest.raises(ValueError, match=message):
        build(radio_dir, tiling=tiling, **options)


def test_a_config_names_its_tile_size():
    with pytest.raises(ValueError, match=r"VLMConfig\.tiling needs its tile_size"):
        vlm.VLMConfig(tiling={"max_tiles": 4})
    assert vlm.VLMConfig().tiling is None


def test_a_chat_session_costs_and_answers_with_tiles(radio_dir):
    from vlm.chat_session import ChatSession

    model, processor = build(radio_dir)
    session = ChatSession(model, processor, max_new_tokens=2)
    assert session.add_image(noise(128, 128)).visual_tokens == 5 * 4  # 2x2 + thumbnail
    assert session.add_image(noise(64, 64)).visual_tokens == 4  # one tile
    assert isinstance("".join(session.ask("What is it?")), str)
