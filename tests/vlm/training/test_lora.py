"""LoRA through PEFT: train, stop + resume, merge (radio-vlm merge-lora), reload. Every module
trains (LLM in LoRA, encoder and projector in full), so a resume must restore all three."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_helpers import losses, tiny_recipe
from transformers import AutoModelForImageTextToText

from recipes.cli import main
from vlm.modeling import VisionLanguageModel
from vlm.training import load_stage, train
from vlm.training.checkpoints import MARKER

NEW = ["model.init_from=null", "model.encoder=tiny", "model.llm=tiny", "model.num_tokens=8"]
LORA = [
    "train.max_steps=4",
    "train.save_steps=2",
    "train.learning_rate=1e-2",
    "train.modules.llm.mode=lora",
    "train.modules.encoder.mode=full",  # every module trains (the encoder as modules_to_save)
    "train.lora.r=4",
    "train.lora.alpha=8",
    "train.lora.dropout=0.0",
    "train.activation_checkpointing=true",
]


def sample(processor):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read it."}]},
        {"role": "assistant", "content": "invoice 42"},
    ]
    return processor(conversations=chat, images=[Image.fromarray(pixels)])


# peft 0.21 calls a transformers method deprecated in 5.x; not ours to fix
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_trains_resumes_merges_and_reloads(tmp_path, capsys, monkeypatch):
    # a new model (stage "pretrain" with the LLM in LoRA): the base is written to out/base
    out = tmp_path / "lora"
    train(tiny_recipe("stage2_pretrain", out, *NEW, *LORA))
    assert (out / "adapter_config.json").is_file() and (out / MARKER).is_file()
    assert not (out / "config.json").exists()  # an adapter, not a full model
    assert (out / "base" / "config.json").is_file()
    table = (out / "modules.md").read_text()
    assert "| llm (language_model) | lora | 0.01 |" in table

    # stopped at step 2 and resumed: the same losses step for step, LoRA included
    split = tmp_path / "split"
    train(tiny_recipe("stage2_pretrain", split, *NEW, *LORA, "train.stop_at_step=2"))
    assert not (split / MARKER).exists() and len(losses(split)) == 2
    train(tiny_recipe("stage2_pretrain", split, *NEW, *LORA, "train.resume=auto"))
    assert "resuming from" in capsys.readouterr().out
    assert losses(split) == losses(out)
    final, reference = (load_file(d / "adapter_model.safetensors") for d in (split, out))
    assert set(final) == set(reference)
    assert any(".vision_tower." in k for k in final) and any("lora_A" in k for k in final)
    assert [k for k in final if not torch.equal(final[k], reference[k])] == []

    # merged (CLI) and reloaded == the unmerged PEFT model
    from peft import PeftModel

    base = VisionLanguageModel.from_pretrained(out / "base").eval()
    model, processor = load_stage(out)
    batch = sample(processor)
    with torch.no_grad():
        base_logits = base(**batch).logits
        unmerged = PeftModel.from_pretrained(base, out).eval()(**batch).logits
    assert (unmerged - base_logits).abs().max() > 1e-3  # the adapter did learn something

    merged_dir = tmp_path / "merged"
    assert main(["merge-lora", str(out), str(merged_dir)]) == 0
    reloaded = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    assert isinstance(reloaded, VisionLanguageModel)
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, unmerged, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.eval()(**batch).logits, unmerged, rtol=0, atol=1e-5)

    # the LoRA stage as it is (no merge step) through the lmms-eval model and the chat loader:
    # the adapter is merged into its base on load, so both see the trained model
    from recipes.chat_model import ChatInputError, load_chat_model
    from vlm.evaluation.model import RadioVLM

    monkeypatch.setenv("HOME", str(tmp_path))
    evaluated = RadioVLM(pretrained="~/lora", device="cpu").model  # ~ expanded, then merged
    assert evaluated.config._name_or_path == str(out)  # what lmms-eval records: not the base
    chatted, _, _ = load_chat_model(out, device="cpu")
    (out / MARKER).unlink()  # a folder without the stage marker loads the same way
    unmarked, _, _ = load_chat_model(out, device="cpu")
    with torch.no_grad():
        for loaded in (evaluated, chatted, unmarked):
            torch.testing.assert_close(loaded.eval()(**batch).logits, unmerged, rtol=0, atol=1e-5)

    # a truncated adapter in a folder without the marker: one line naming the folder
    weights = out / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ChatInputError, match=f"cannot load the model in {out}"):
        load_chat_model(out, device="cpu")
