"""One training stage: recipe -> model -> freeze / LoRA -> data -> Trainer -> saved stage.

    >>> from vlm.training import load_recipe, train
    >>> out_dir = train(load_recipe("recipes/tiny/stage1_align.yaml"))

The output_dir of a finished stage holds the model and processor (``save_pretrained``; a PEFT
adapter after a LoRA stage), trainer_state.json (the loss log), recipe.yaml (the resolved
recipe), modules.md (the freeze policy and learning rates), run_info.json (what the launch
really got) and complete.json (the stage finished). ``checkpoint-N/`` folders are the resume
points, valid only with their own complete.json (``vlm.training.checkpoints``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed
from transformers.utils import (
    CONFIG_NAME,
    GENERATION_CONFIG_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
)

from vlm import data as vlm_data
from vlm.saved import is_adapter
from vlm.schema import RecipeError

from .checkpoints import (
    MARKER,
    CompletionMarkerCallback,
    discard_newer,
    is_complete,
    latest_checkpoint,
    remove_incomplete,
    verified_resume_point,
    write_marker,
)
from .composite import assemble, remove_weights, weight_files
from .loading import _dtype, build_model
from .lora import (
    BASE_DIR,
    apply_lora,
    is_peft_model,
    lora_base,
    quantization_kwargs,
    save_base,
    uses_lora,
)
from .modules import apply_freeze, modules_table, plan_modules
from .recipe import Recipe, TrainSpec, dump_recipe
from .report import loss_plot
from .resume import check_adapter_restored, load_model_weights
from .trainer import RunInfoCallback, StopAtStepCallback, VLMTrainer

TRAINER_STATE = "trainer_state.json"

# TrainingArguments this module sets itself; training_arguments may not set them again
_OWN_ARGS = {f.name for f in dataclasses.fields(TrainSpec)} | {
    "save_strategy",
    "remove_unused_columns",
    "train_sampling_strategy",
    "save_total_limit",
}


def train(recipe: Recipe) -> Path:
    """Run one stage; returns its output_dir (a finished stage for the next one to load)."""
    spec = recipe.train
    plans = plan_modules(recipe)
    output_dir = Path(spec.output_dir)
    if spec.resume in ("auto", True) and is_complete(output_dir):
        print(
            f"[radio-vlm] {output_dir} is a finished stage ({MARKER}); nothing to resume. To "
            "train it further pass a checkpoint (--resume DIR/checkpoint-N) or a new output_dir",
            flush=True,
        )
        return output_dir
    checkpoint = resume_point(spec, output_dir)  # before the (slow) build: errors come early
    set_seed(spec.seed)
    settings = launch_settings(spec)
    quant = quantization_kwargs(spec.lora, torch.bfloat16 if settings["bf16"] else torch.float32)
    if quant and recipe.model.init_from is None:
        raise RecipeError(
            "train.lora.quantize (QLoRA) needs model.init_from: a saved full-precision stage "
            "to serve as the base the adapter is merged into later"
        )
    # TrainingArguments BEFORE the model: with a ZeRO-3 config they make every model created
    # from here on born partitioned (transformers' deepspeed.zero.Init + from_pretrained path)
    args = training_arguments(spec, settings)
    main = int(os.environ.get("RANK", "0")) == 0  # global rank (torchrun / accelerate launch)
    model, processor, source = stage_model(recipe, args, quant, main, resuming=bool(checkpoint))
    apply_freeze(model, plans)
    if uses_lora(plans):
        base, write_base = lora_base(recipe.model.init_from, output_dir)
        if write_base and main and not is_complete(base):
            save_base(model, processor, base)
        model = apply_lora(model, plans, spec.lora, base, spec.activation_checkpointing)
    if checkpoint is not None:
        checkpoint = verified_checkpoint(checkpoint, spec, output_dir, main)
    if main:
        remove_incomplete(output_dir)  # killed saves; never chosen by resume_point anyway
        if checkpoint is not None:
            (output_dir / MARKER).unlink(missing_ok=True)  # the stage is unfinished again
            discard_newer(output_dir, checkpoint)
            print(f"[radio-vlm] resuming from {checkpoint}", flush=True)
    if checkpoint is not None and is_last_step(checkpoint, spec):
        # the run was killed during its final save: every step is done, so no step is run
        # again (the Trainer would train one more at learning rate 0); only the save is redone
        deepspeed = args.deepspeed_plugin is not None
        finish_from(checkpoint, model, processor, output_dir, recipe.stage, main, deepspeed)
        drop_assembly(source, output_dir, plans, main)
        return output_dir
    table = modules_table(model, plans, recipe.stage)
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
        (output_dir / "modules.md").write_text(table, encoding="utf-8")
        print(table, flush=True)
    data_config = recipe.data
    if data_config.skip_report_dir is None:  # every rank reports into the run directory
        data_config = dataclasses.replace(data_config, skip_report_dir=str(output_dir / "skips"))
    dataset = vlm_data.build_dataset(data_config, processor)
    collator = vlm_data.VLMCollator(
        pad_token_id=processor.tokenizer.pad_token_id,
        padding_side="right",
        pad_to_multiple_of=spec.pad_to_multiple_of,
        packing=spec.packing,
        max_length=dataset.encoder.max_length,  # data.max_length, or the LLM's context
    )
    run_info = RunInfoCallback()
    trainer = VLMTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=[
            CompletionMarkerCallback(spec.save_total_limit),
            run_info,
            vlm_data.SkipReportCallback(dataset.report),
        ],
        plans=plans,
        nonfinite=spec.nonfinite,
        weights_source=source,
        weights_dtype=_dtype(recipe.model.dtype) or torch.float32,
    )
    run_info.trainer = trainer
    if spec.stop_at_step is not None:
        trainer.add_callback(StopAtStepCallback(spec.stop_at_step))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if main and trainer.skipped_steps:
        print(
            f"[radio-vlm] {len(trainer.skipped_steps)} optimizer step(s) skipped for a non-"
            f"finite gradient (train.nonfinite=skip): steps {trainer.skipped_steps}",
            flush=True,
        )
    if main:
        loss_plot(trainer.state.log_history, output_dir / "loss.png", f"stage {recipe.stage}")
    if trainer.state.global_step < trainer.state.max_steps:  # stop_at_step: not finished
        trainer.save_state()  # the loss log so far
        if main:
            print(
                f"[radio-vlm] stopped at step {trainer.state.global_step} of "
                f"{trainer.state.max_steps} (train.stop_at_step); continue with --resume",
                flush=True,
            )
        return output_dir
    trainer.save_model(str(output_dir))  # gathers ZeRO-3 shards; writes the processor too
    trainer.save_state()
    trainer.accelerator.wait_for_everyone()
    if main:
        write_marker(output_dir, "stage", trainer.state.global_step, recursive=False)
    drop_assembly(source, output_dir, plans, main)
    if main:
        print(f"[radio-vlm] stage {recipe.stage!r} finished: model + processor in {output_dir}")
    return output_dir


def stage_model(
    recipe: Recipe, args: TrainingArguments, quant: dict[str, Any], main: bool, resuming: bool
) -> tuple[Any, Any, Path | None]:
    """The stage's starting model and processor, and the saved model they were loaded from
    (None: built in memory). Under DeepSpeed and FSDP every stage loads a saved model with
    ``from_pretrained`` (ZeRO-3: partitioned while loading; FSDP's cpu_ram_efficient_loading:
    on the main process only): ``init_from``, or for a new model its assembly in
    ``output_dir/base`` (``vlm.training.composite.assemble``, tensor by tensor), in float32
    unless ``model.dtype`` says otherwise (the engines want one dtype)."""
    spec = recipe.model
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if args.deepspeed_plugin is None and not fsdp:
        model, processor = build_model(spec, seed=args.seed, llm_loader_kwargs=quant)
        return model, processor, None
    if spec.init_from is None:
        base = Path(args.output_dir) / BASE_DIR
        with args.main_process_first(local=False, desc="assembling the new model"):
            if main and not (resuming and is_complete(base)):  # a fresh start: the recipe's
                assemble(spec, seed=args.seed, folder=base, dtype=_dtype(spec.dtype))
        spec = dataclasses.replace(spec, init_from=str(base))
    spec = dataclasses.replace(spec, dtype=spec.dtype or "float32")
    model, processor = build_model(spec, seed=args.seed, llm_loader_kwargs=quant)
    source = Path(spec.init_from).resolve()
    params = list(model.parameters())
    partitioned = sum(hasattr(p, "ds_id") for p in params)  # deepspeed.zero.Init's mark
    if main and partitioned:
        print(
            f"[radio-vlm] ZeRO-3: the model was loaded partitioned ({partitioned} of "
            f"{len(params)} parameters hold only their shard) from {source}",
            flush=True,
        )
    return model, processor, None if is_adapter(source) else source


def drop_assembly(source: Path | None, output_dir: Path, plans: Any, main: bool) -> None:
    """Remove the assembled start (``composite.assemble`` into output_dir/base) once the
    stage is finished; a LoRA stage keeps it: it is the base its adapter is merged into."""
    if main and source == (output_dir / BASE_DIR).resolve() and not uses_lora(plans):
        shutil.rmtree(source)


def is_last_step(checkpoint: Path, spec: TrainSpec) -> bool:
    """The checkpoint was saved after the last step of the schedule this run asks for (the
    same max_steps, or epochs): a longer schedule continues from it instead."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    done = state.get("max_steps", 0) > 0 and state["global_step"] >= state["max_steps"]
    if spec.max_steps > 0:
        return done and spec.max_steps == state["max_steps"]
    return done and state.get("num_train_epochs") == math.ceil(spec.num_train_epochs)


def finish_from(
    checkpoint: Path,
    model: Any,
    processor: Any,
    output_dir: Path,
    stage: str,
    main: bool,
    deepspeed: bool = False,
) -> Path:
    """The stage's final save from its last checkpoint: its weights loaded strictly (a
    plain model through ``from_pretrained``'s path, a PEFT adapter through PEFT's) and saved,
    or under DeepSpeed (a plain model) its weight files copied; with the processor and the
    loss log, and the stage marked finished."""
    copy_weights = deepspeed and not is_peft_model(model)
    if copy_weights:
        # Under ZeRO-3 each rank holds only its shard, and under bf16 the engine's copies are
        # rounded, so the model is not saved from here: the checkpoint's own weights are the
        # finished model (written by the same VLMTrainer.save_model, in the stage's dtype,
        # hashed by verified_checkpoint), copied as they are.
        if main:
            copy_model_files(checkpoint, output_dir)
    elif is_peft_model(model):
        model.load_adapter(str(checkpoint), "default", is_trainable=True)
        check_adapter_restored(model, checkpoint)
    else:
        load_model_weights(model, checkpoint)
    if main:
        if not copy_weights:
            model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        shutil.copyfile(checkpoint / TRAINER_STATE, output_dir / TRAINER_STATE)
        step = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"]
        write_marker(output_dir, "stage", step, recursive=False)
        print(
            f"[radio-vlm] stage {stage!r} finished from {checkpoint.name} (its last step; the "
            f"final save had not completed): model + processor in {output_dir}",
            flush=True,
        )
    return output_dir


def copy_model_files(checkpoint: Path, output_dir: Path) -> None:
    """The checkpoint's model (config, generation config, safetensors weights and their
    index) into ``output_dir``, replacing any weights a killed save left there."""
    output_dir.mkdir(parents=True, exist_ok=True)  # a resume into a new output_dir
    remove_weights(output_dir)  # a killed save's shards would mix into the index
    names = [CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME]
    for path in [*(checkpoint / name for name in names), *weight_files(checkpoint)]:
        if path.is_file():
            shutil.copyfile(path, output_dir / path.name)


def launch_settings(spec: TrainSpec) -> dict[str, Any]:
    """The automatic and derived TrainingArguments values, checked before the (slow) model
    build: use_cpu, bf16, gradient_accumulation_steps (from global_batch_size)."""
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    for key in spec.training_arguments:
        if key not in known or key in _OWN_ARGS:
            why = "is set by the recipe's own train keys" if key in known else "is unknown"
            raise RecipeError(
                f"train.training_arguments.{key} {why}; use the train key of that name, or a "
                "TrainingArguments field (transformers 5.24) not covered by the recipe"
            )
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    accumulation = spec.gradient_accumulation_steps
    if spec.global_batch_size is not None:
        per_step = spec.per_device_train_batch_size * world
        if spec.global_batch_size % per_step:
            raise RecipeError(
                f"train.global_batch_size={spec.global_batch_size} is not a multiple of "
                f"per_device_train_batch_size x processes = {spec.per_device_train_batch_size} x "
                f"{world} = {per_step}; change one of them"
            )
        accumulation = spec.global_batch_size // per_step
    use_cpu = resolve_use_cpu(spec.use_cpu)
    return {
        "use_cpu": use_cpu,
        "bf16": resolve_bf16(spec.bf16, use_cpu),
        "gradient_accumulation_steps": accumulation,
    }


def training_arguments(spec: TrainSpec, settings: dict[str, Any]) -> TrainingArguments:
    """The recipe's train section as TrainingArguments (``settings``: ``launch_settings``)."""
    sampling = {"train_sampling_strategy": "group_by_length"} if spec.group_by_length else {}
    return TrainingArguments(
        output_dir=spec.output_dir,
        per_device_train_batch_size=spec.per_device_train_batch_size,
        num_train_epochs=spec.num_train_epochs,
        max_steps=spec.max_steps,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type,
        warmup_steps=spec.warmup_steps,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        activation_checkpointing=spec.activation_checkpointing,
        logging_steps=spec.logging_steps,
        save_strategy="steps",
        save_steps=spec.save_steps,
        save_total_limit=None,  # rotation happens after the completion marker (checkpoints.py)
        dataloader_num_workers=spec.dataloader_num_workers,
        seed=spec.seed,
        report_to=spec.report_to,
        remove_unused_columns=False,  # the collator's keys are the model's inputs
        **sampling,
        **settings,
        **spec.training_arguments,
    )


def resolve_use_cpu(wanted: bool | None) -> bool:
    """None: the CPU exactly when there is no GPU (Trainer needs use_cpu=True there, or
    DeepSpeed on CPU fails: every process believes it is rank 0 of 1)."""
    return (not torch.cuda.is_available()) if wanted is None else wanted


def resolve_bf16(wanted: bool | None, use_cpu: bool) -> bool:
    """None: what ``accelerate launch`` was configured with, else bf16 where the GPU has it.
    An explicit value must agree with the launch config (accelerate errors obscurely)."""
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if wanted is None:
        if launched is not None:
            return launched == "bf16"
        return not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if launched is not None and launched != "no" and (launched == "bf16") != wanted:
        raise RecipeError(
            f"train.bf16={wanted} but accelerate launch was configured with mixed_precision "
            f"{launched!r}; make them agree (--override train.bf16={launched == 'bf16'} or "
            "mixed_precision in the accelerate config)"
        )
    return wanted


def verified_checkpoint(
    checkpoint: Path, spec: TrainSpec, output_dir: Path, main: bool
) -> Path | None:
    """The resume point after the main process checked its contents against the hashes
    recorded at save time, the same on every rank (an error too, so no rank waits alone).
    The run's own latest checkpoint falls back to an earlier good one; with resume: auto and
    none left the stage starts fresh, with resume: true that is an error; a checkpoint the
    user named must be good itself."""
    own = Path(checkpoint).resolve().parent == output_dir.resolve() and spec.resume in (
        "auto",
        True,
    )
    outcome: list[Any] = [None, None]  # [chosen checkpoint, error message]
    if main:
        try:
            outcome[0] = verified_resume_point(checkpoint, fall_back=own)
        except ValueError as err:
            outcome[1] = str(err)
        if outcome[0] is None and outcome[1] is None and spec.resume is True:
            outcome[1] = (
                f"train.resume=true but no uncorrupted checkpoint is left in {output_dir}; "
                "use resume: auto to start fresh"
            )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise RecipeError(outcome[1])
    if main and outcome[0] is None:
        print(
            f"[radio-vlm] no uncorrupted checkpoint is left; starting {output_dir} afresh",
            flush=True,
        )
    return outcome[0]


def resume_point(spec: TrainSpec, output_dir: Path) -> Path | None:
    """The checkpoint to resume from per ``train.resume`` (only complete ones count)."""
    latest = latest_checkpoint(output_dir)
    resume = spec.resume
    if resume is False:
        if latest is not None or is_complete(output_dir):
            what = f"checkpoint {latest.name}" if latest else "a finished stage"
            raise RecipeError(
                f"train.output_dir {output_dir} already holds {what}; pass --resume (train.resume"
                "=auto) to continue it, or choose another output_dir"
            )
        return None
    if resume in ("auto", True):
        if latest is None and resume is True:
            raise RecipeError(
                f"train.resume=true but {output_dir} has no complete checkpoint; use "
                "resume: auto to start fresh when there is none"
            )
        return latest
    if isinstance(resume, str):
        if not is_complete(Path(resume)):
            raise RecipeError(
                f"train.resume={resume!r} is not a complete checkpoint ({MARKER} missing or "
                "stale); use resume: auto for the latest complete one"
            )
        return Path(resume)
    raise RecipeError(f"train.resume must be false, true, 'auto' or a path; got {resume!r}")
