"""The three tiny stages chained end to end on CPU (recipes/tiny), in this process."""

from __future__ import annotations

import pytest
import torch
from train_helpers import STAGES, losses, state_dict, tiny_recipe

from vlm.training import build_model, load_recipe, load_stage, train
from vlm.training.checkpoints import MARKER, latest_checkpoint

PREFIX = {"encoder": "vision_tower.", "projector": "projector.", "llm": "language_model."}
TRAINED = {
    "stage1_align": {"projector"},
    "stage2_pretrain": {"projector", "llm"},
    "stage3_sft": {"projector", "llm", "encoder"},
}


def split(weights: dict[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if k.startswith(PREFIX[module])}


def test_three_stages_chain_freeze_and_learn(tmp_path, capsys):
    previous = None
    for stage in STAGES:
        out = tmp_path / stage
        extra = ["train.max_steps=8", "train.save_steps=4"]
        if previous is not None:  # (with activation checkpointing, as the real recipes)
            extra += [f"model.init_from={previous}", "train.activation_checkpointing=true"]
        recipe = tiny_recipe(stage, out, *extra)
        if previous is None:
            before = state_dict(build_model(recipe.model, seed=recipe.train.seed)[0])
        else:
            before = state_dict(load_stage(previous)[0])

        assert train(recipe) == out

        model = load_stage(out)[0]
        after, params = state_dict(model), {name for name, _ in model.named_parameters()}
        assert before.keys() == after.keys()
        for module in PREFIX:
            old, new = split(before, module), split(after, module)
            assert old, module
            if module in TRAINED[stage]:
                unchanged = [k for k in old if k in params and torch.equal(old[k], new[k])]
                assert not unchanged, f"{stage}: trainable {module} weights did not change"
            else:
                for key in old:  # frozen: bit-identical (buffers too)
                    assert torch.equal(old[key], new[key]), f"{stage}: frozen {key} changed"
        loss = list(losses(out).values())
        assert len(loss) == 8
        assert sum(loss[-3:]) < sum(loss[:3]), f"{stage}: loss did not fall: {loss}"
        # the run directory: finished marker, resolved recipe (reloadable), freeze table
        assert (out / MARKER).is_file() and latest_checkpoint(out).name == "checkpoint-8"
        assert load_recipe(out / "recipe.yaml").train.output_dir == str(out)
        table = (out / "modules.md").read_text()
        for module in PREFIX:
            mode = "full" if module in TRAINED[stage] else "frozen"
            assert f"| {module} ({PREFIX[module][:-1]}) | {mode} |" in table
        assert table in capsys.readouterr().out  # printed at start
        previous = out


def test_a_stage_refuses_an_unfinished_previous_stage_and_a_used_output_dir(tmp_path):
    first = tiny_recipe("stage1_align", tmp_path / "s1", "train.max_steps=2", "train.save_steps=1")
    train(first)
    (tmp_path / "s1" / MARKER).unlink()  # as if killed before the final save
    second = tiny_recipe("stage2_pretrain", tmp_path / "s2", f"model.init_from={tmp_path / 's1'}")
    with pytest.raises(FileNotFoundError, match=r"no finished stage \(its latest .*checkpoint-2"):
        train(second)
    with pytest.raises(ValueError, match=r"already holds checkpoint checkpoint-2; pass --resume"):
        train(first)


def test_model_attn_implementation_reaches_the_llm_and_the_tower(tmp_path):
    def kernels(model):
        return (
            model.language_model.config._attn_implementation,
            model.vision_tower.model.config._attn_implementation,
        )

    first = tiny_recipe(
        "stage1_align", tmp_path / "s1", "train.max_steps=1", "model.attn_implementation=eager"
    )
    assert kernels(build_model(first.model)[0]) == ("eager", "eager")
    train(first)
    for implementation in ("eager", "sdpa"):
        later = tiny_recipe(
            "stage2_pretrain",
            tmp_path / "s2",
            f"model.init_from={tmp_path / 's1'}",
            f"model.attn_implementation={implementation}",
        )
        assert kernels(build_model(later.model)[0]) == (implementation,) * 2
