"""`radio-vlm chat` and ``vlm.chat_session`` on a tiny random model: streaming, history,
image costs, the compressor override and every bad-input message."""

from __future__ import annotations

import io
import shutil
import threading

import pytest
import torch
from PIL import Image

import vlm
from recipes.chat_model import load_chat_model
from recipes.cli import main
from vlm.chat_session import ChatSession
from vlm.modeling import VisionLanguageModel

K = 4  # visual tokens per image of conftest's chat_model_dir


@pytest.fixture
def model_dir(chat_model_dir):
    return chat_model_dir


@pytest.fixture
def generate_calls(monkeypatch):
    """Every ``generate`` call's keyword arguments, the real generation still running."""
    calls, original = [], VisionLanguageModel.generate

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VisionLanguageModel, "generate", spy)
    return calls


def greedy_answer(model_dir, page, question, max_new_tokens):
    """The answer without streaming: one greedy ``generate`` on the same prompt."""
    model, processor, _ = load_chat_model(model_dir, device="cpu")
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    inputs = processor(images=[Image.open(page)], conversations=chat, add_generation_prompt=True)
    eos = [processor.tokenizer.eos_token_id]
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_one_shot_streams_the_greedy_answer_and_prints_the_image_cost(model_dir, pages, capsys):
    argv = ["chat", "--pretrained", str(model_dir), "--image", str(pages[0])]
    assert main([*argv, "--max-new-tokens", "12", "--device", "cpu", "What is the title?"]) == 0
    out, err = capsys.readouterr()
    expected = greedy_answer(model_dir, pages[0], "What is the title?", 12)
    assert expected.strip(), "the tiny model should say something for this test to mean much"
    assert out == expected + "\n"
    assert "[image 1] page0.png: 64x64 px, 64 patches -> 4 visual tokens (tome)" in err
    assert "warning" not in err


def test_answer_pieces_reach_the_reader_while_generate_still_runs(model_dir, pages):
    model, processor, _ = load_chat_model(model_dir, device="cpu")
    session = ChatSession(model, processor, max_new_tokens=16)
    session.add_image(pages[0])
    first_piece_read, steps = threading.Event(), []

    def hold_after_a_few_steps(module, args, kwargs):
        steps.append(1)
        if len(steps) == 8:  # the LLM waits here until the reader has had text
            assert first_piece_read.wait(timeout=30), "no text reached the reader mid-generation"

    hook = model.language_model.register_forward_pre_hook(hold_after_a_few_steps, with_kwargs=True)
    try:
        pieces = []
        for piece in session.ask("What is the title?"):
            pieces.append(piece)
            first_piece_read.set()
    finally:
        hook.remove()
    assert len(steps) > 8 and len(pieces) >= 2
    assert session.messages[-1] == {"role": "assistant", "content": "".join(pieces)}


def test_conversation_keeps_history_and_images_added_between_turns(
    model_dir, pages, monkeypatch, capsys, generate_calls
):
    lines = f"What is the title?\n/image {pages[1]}\nAnd this one?\n/quit\nnever read\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    argv = ["chat", "--pretrained", str(model_dir), "--image", str(pages[0]), "--device", "cpu"]
    assert main([*argv, "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    assert "[image 1] page0.png" in err and "[image 2] page1.png" in err
    answers = [line.removeprefix("model> ") for line in out.splitlines()]
    assert len(generate_calls) == 2 and len(answers) == 2
    tokenizer = vlm.VLMProcessor.from_pretrained(model_dir).tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    first, second = (call["input_ids"][0] for call in generate_calls)
    assert [len(call["pixel_values"]) for call in generate_calls] == [1, 2]
    assert (first == image_id).sum() == K and (second == image_id).sum() == 2 * K
    # the second prompt holds the first turn, question and answer, then the new question
    prompt = tokenizer.decode(second)
    asked = prompt.index("What is the title?")
    replied = prompt.index(answers[0], asked)
    assert prompt.index("And this one?", replied) > replied
    assert prompt.count("<image>") == 2 * K


def test_reset_forgets_the_history(model_dir, pages, monkeypatch, capsys, generate_calls):
    monkeypatch.setattr("sys.stdin", io.StringIO("First question?\n/reset\nSecond question?\n"))
    argv = ["chat", "--pretrained", str(model_dir), "--image", str(pages[0]), "--device", "cpu"]
    assert main([*argv, "--max-new-tokens", "2"]) == 0
    assert "[conversation cleared]" in capsys.readouterr().err
    second = generate_calls[1]
    assert "pixel_values" not in second  # the image went with the history
    tokenizer = vlm.VLMProcessor.from_pretrained(model_dir).tokenizer
    assert "First question?" not in tokenizer.decode(second["input_ids"][0])


def test_budget_override_warns_and_changes_the_visual_tokens(model_dir, pages, capsys):
    argv = ["chat", "--pretrained", str(model_dir), "--image", str(pages[0]), "--device", "cpu"]
    assert (
        main(
            [*argv, "--compressor", "avgpool", "--num-tokens", "2", "--max-new-tokens", "2", "Hi?"]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert (
        "warning: this model was trained with tome at K=4 visual tokens per image; running it "
        "with avgpool at K=2 is an experiment" in err
    )
    assert "64 patches -> 2 visual tokens (avgpool)" in err
    # the same settings as saved: nothing to warn about
    assert main([*argv, "--num-tokens", "4", "--max-new-tokens", "1", "Hi?"]) == 0
    assert "warning" not in capsys.readouterr().err


def bad_inputs(model_dir, pages, tmp):
    """(argv, what the one-line error must say) for every kind of bad input."""
    (tmp / "empty").mkdir()
    (tmp / "notes.txt").write_text("not a picture")
    (tmp / "cut.png").write_bytes(pages[0].read_bytes()[:200])
    corrupted = tmp / "corrupted"
    shutil.copytree(model_dir, corrupted)
    with open(corrupted / "model.safetensors", "r+b") as f:  # same size, other bytes
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    model, page = str(model_dir), str(pages[0])
    chat = ["chat", "--device", "cpu", "--max-new-tokens", "1"]
    return [
        (
            [*chat, "--pretrained", str(tmp / "nowhere"), "Hi?"],
            "no such folder: .*nowhere; pass --pretrained the folder a training stage wrote",
        ),
        (
            [*chat, "--pretrained", str(tmp / "empty"), "Hi?"],
            "empty is not a saved model \\(no config.json or processor_config.json\\); pass --pretrained",
        ),
        (
            [*chat, "--pretrained", str(tmp / "notes.txt"), "Hi?"],
            "notes.txt is a file, not a model folder",
        ),
        (
            [*chat, "--pretrained", str(corrupted), "Hi?"],
            "cannot load the model in .*corrupted: .*model.safetensors changed",
        ),
        (
            [*chat, "--pretrained", model, "--image", str(tmp / "gone.png"), "Hi?"],
            "no such image: .*gone.png; check the path",
        ),
        (
            [*chat, "--pretrained", model, "--image", str(tmp), "Hi?"],
            "is a folder; --image and /image take one image file",
        ),
        (
            [*chat, "--pretrained", model, "--image", str(tmp / "notes.txt"), "Hi?"],
            "notes.txt is not an image Pillow can read \\(corrupt_image",
        ),
        (
            [*chat, "--pretrained", model, "--image", str(tmp / "cut.png"), "Hi?"],
            "cut.png is not an image Pillow can read \\(truncated_image",
        ),
        (
            [*chat, "--pretrained", model, "--image", page, "--num-tokens", "5000", "Hi?"],
            "--num-tokens 5000 is too many: min_patches 5000 is more than the largest grid the encoder takes",
        ),
        (
            [*chat, "--pretrained", model, "--image", page, "   "],
            "the prompt is empty; ask a question, or leave it out to converse",
        ),
    ]


def test_bad_input_is_one_line_naming_the_fix_and_exit_code_2(model_dir, pages, tmp_path, capsys):
    for argv, message in bad_inputs(model_dir, pages, tmp_path):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert out == ""
        assert len(lines) == 1 and lines[0].startswith("radio-vlm chat: error: "), err
        assert __import__("re").search(message, lines[0]), (message, lines[0])


def test_bad_input_mid_conversation_is_reported_and_the_conversation_goes_on(
    model_dir, monkeypatch, capsys, tmp_path
):
    lines = f"/image {tmp_path / 'gone.png'}\n/image\n/frobnicate\nStill there?\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert (
        main(["chat", "--pretrained", str(model_dir), "--device", "cpu", "--max-new-tokens", "2"])
        == 0
    )
    out, err = capsys.readouterr()
    assert "error: no such image: " in err
    assert "error: /image needs a path: /image PATH" in err
    assert "error: unknown command /frobnicate; /image PATH adds a picture" in err
    assert out.startswith("model> ")
    assert "Traceback" not in err


def test_a_plain_save_pretrained_folder_loads_too(model_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain, ignore=shutil.ignore_patterns("complete.json"))
    model, processor, warning = load_chat_model(plain, device="cpu")
    assert warning is None and processor.compressor.num_tokens == K
    assert isinstance(model, VisionLanguageModel) and not model.training
    assert next(model.parameters()).device == torch.device("cpu")
