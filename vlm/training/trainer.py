"""transformers' Trainer with per-module learning rates, plus run bookkeeping callbacks.

A few methods are overridden, each minimally:

- ``create_optimizer``: one param group per module (projector / LLM / encoder, each split
  into weight decay or not) with that module's LR. Passing ``optimizers=(opt, None)`` to the
  Trainer instead would not work under DeepSpeed (transformers then builds DeepSpeed's
  optimizer through ``create_optimizer`` itself, see ``deepspeed_optim_sched``), and a DeepSpeed
  JSON "optimizer" section would replace our groups with one LR; so the recipes' DeepSpeed
  configs have no "optimizer" section and this override serves every backend. Under ZeRO
  optimizer offload it builds DeepSpeedCPUAdam (DeepSpeed rejects torch's AdamW there).
- ``_load_from_checkpoint``: ``--resume`` loads the model's weights through
  ``from_pretrained``'s path and refuses any key it cannot place (``vlm.training.resume``);
  the Trainer's own non-strict load drops the RADIO tower's converted keys without a word.
- ``training_step`` / ``_get_grad_norm``: a non-finite loss or gradient norm stops the run
  with an error naming the step, or (``train.nonfinite: skip``) drops that optimizer step and
  counts it. The Trainer itself only hides such losses from the log (``logging_nan_inf_filter``)
  and steps on.
- ``save_model``: under DeepSpeed every weight is saved in the recipe's ``model.dtype``
  (``vlm.training.composite.save_in_dtype``); the engine's bf16 copies would round the frozen
  weights and the Trainer's 16-bit gather would hold the whole model on rank 0.
- ``_get_train_sampler``: length-grouped sampling reads ``train_dataset.lengths`` instead of
  processing every sample (images included) to measure it, which Trainer does for datasets
  that are not ``datasets.Dataset``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_pt_utils import LengthGroupedSampler

from .composite import save_in_dtype
from .lora import is_peft_model
from .modules import ATTRIBUTES, ModulePlan, param_groups
from .resume import check_adapter_restored, load_model_weights

logger = logging.getLogger(__name__)


class VLMTrainer(Trainer):
    """``Trainer`` whose optimizer has one LR per module (``plans``)."""

    def __init__(
        self,
        *args: Any,
        plans: dict[str, ModulePlan],
        nonfinite: str = "error",
        weights_source: Path | None = None,
        weights_dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> None:
        self.plans = plans
        self.nonfinite = nonfinite
        self.weights_source = weights_source  # the saved model the stage started from
        self.weights_dtype = weights_dtype  # what saves write (the recipe's model.dtype)
        self.skipped_steps: list[int] = []  # optimizer steps dropped for non-finite gradients
        super().__init__(*args, **kwargs)
        if nonfinite == "skip" and self.is_deepspeed_enabled:
            raise ValueError(
                "train.nonfinite=skip cannot work under DeepSpeed (its engine applies the step "
                "before the gradient norm is known); use nonfinite: error"
            )

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        loss = super().training_step(model, inputs, num_items_in_batch)
        # one process: stop at the micro-batch; several: the gradient norm (global, the same
        # on every rank) decides, so no rank raises while the others wait in a collective
        if (
            self.nonfinite == "error"
            and self.args.world_size == 1
            and not torch.isfinite(loss).all()
        ):
            raise NonFiniteError(
                f"the training loss is {loss.item()} at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0:.2f}); the model's weights are intact up to the "
                "last checkpoint. Look for broken samples or too high a learning rate, resume "
                "with --resume, or set train.nonfinite=skip to drop such steps"
            )
        return loss

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        norm = super()._get_grad_norm(model, grad_norm)
        # fp16 loss scaling overflows on purpose (the scaler skips those steps itself)
        if norm is None or self.args.fp16 or math.isfinite(float(norm)):
            return norm
        step = self.state.global_step + 1
        if self.nonfinite == "error":
            raise NonFiniteError(
                f"the gradient norm is {float(norm)} at step {step}; the model's weights are "
                "intact up to the last checkpoint. Lower the learning rate or check the data, "
                "or set train.nonfinite=skip to drop such steps"
            )
        model.zero_grad(set_to_none=True)  # the optimizer leaves params without grads alone
        self.skipped_steps.append(step)
        logger.warning("step %d: non-finite gradient norm, optimizer step skipped", step)
        return norm

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self.skipped_steps:
            logs["nonfinite_skipped_steps"] = len(self.skipped_steps)
        super().log(logs, *args, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        groups = param_groups(
            opt_model, self.plans, self.get_decay_parameter_names(opt_model), self.args.weight_decay
        )
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if _offloads_optimizer(self):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer_cls = DeepSpeedCPUAdam
            kwargs = {k: v for k, v in kwargs.items() if k in ("lr", "betas", "eps")}
        self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under DeepSpeed (a plain model loaded from ``weights_source``), every weight in
        ``weights_dtype`` however the engine holds it (bf16 casts frozen weights too): see
        ``vlm.training.composite.save_in_dtype``. Otherwise the Trainer's own save."""
        if (
            not self.is_deepspeed_enabled
            or self.weights_source is None
            or is_peft_model(self.model)
        ):
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        trained = {ATTRIBUTES[name] for name, plan in self.plans.items() if plan.trainable}
        save_in_dtype(
            self.model,
            output_dir,
            source=self.weights_source,
            trained=trained,
            dtype=self.weights_dtype,
            main=self.args.should_save,
        )
        if self.args.should_save:
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        target = self.model if model is None else model
        if self.is_fsdp_enabled or not isinstance(target, PreTrainedModel):
            super()._load_from_checkpoint(resume_from_checkpoint, model)  # PEFT, FSDP
            if not self.is_fsdp_enabled and is_peft_model(target):
                check_adapter_restored(target, resume_from_checkpoint)
            return
        load_model_weights(target, resume_from_checkpoint)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                dataset=dataset,
                lengths=list(dataset.lengths),  # estimated without decoding images
            )
        return super()._get_train_sampler(train_dataset)


class NonFiniteError(FloatingPointError):
    """The loss or gradient norm became NaN or infinite (``train.nonfinite: error``)."""


class StopAtStepCallback(TrainerCallback):
    """Save a checkpoint and stop once ``global_step`` reaches ``step``; the LR schedule still
    spans the whole run, so ``--resume`` continues it exactly (jobs under a time limit)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True


def _offloads_optimizer(trainer: Trainer) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return False
    zero = plugin.deepspeed_config.get("zero_optimization", {})
    return zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)


# a launch configured for an engine that silently got another: why, and what to do
_ENGINE_FALLBACKS = {
    "DEEPSPEED": (
        "DeepSpeed",
        " (is ACCELERATE_USE_CPU set? it replaces DeepSpeed with DDP). Unset it: CPU training "
        "is chosen by the recipe (train.use_cpu).",
    ),
    "FSDP": (
        "FSDP",
        ": accelerate (1.15) applies FSDP only to GPU-type processes, never to CPU ones "
        "(train.use_cpu, or no GPU), which it runs as plain data parallel instead. Run FSDP on "
        "GPUs, or DeepSpeed on the CPU.",
    ),
}


class RunInfoCallback(TrainerCallback):
    """At train start, records what the launch really produced (``run_info.json``): the
    distributed type, process count, engine and optimizer classes. Wrong launch setups
    degrade silently (an env var turns DeepSpeed into DDP, a MULTI_CPU config starts one
    process), so this is printed and tests assert it. Also refuses the silent fallback of a
    DeepSpeed or FSDP launch that did not get that engine."""

    def __init__(self, trainer: Trainer | None = None) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        info = describe_run(self.trainer)
        got = info["distributed_type"]
        for engine, (name, why) in _ENGINE_FALLBACKS.items():
            configured = os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true"
            if configured and got != engine:
                raise RuntimeError(
                    f"accelerate was configured for {name} but the run got {got}{why}"
                )
        if state.is_world_process_zero:
            path = Path(args.output_dir) / "run_info.json"
            path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            print(
                f"[radio-vlm] {info['distributed_type']}"
                + (f" ZeRO-{info['zero_stage']}" if info["zero_stage"] is not None else "")
                + f", {info['num_processes']} process(es) on {info['device']}, mixed precision "
                f"{info['mixed_precision']}; engine {info['engine']}; optimizer "
                f"{' > '.join(info['optimizer'])}",
                flush=True,
            )


def describe_run(trainer: Trainer) -> dict[str, Any]:
    """Distributed type, processes, device, precision, engine and optimizer class chain."""
    accelerator = trainer.accelerator
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    chain, opt = [], trainer.optimizer
    while opt is not None and len(chain) < 5:  # AcceleratedOptimizer > ZeRO optimizer > Adam
        chain.append(type(opt).__name__)
        inner = getattr(opt, "optimizer", None)
        opt = inner if inner is not opt else None
    return {
        "distributed_type": accelerator.distributed_type.value,
        "num_processes": accelerator.num_processes,
        "device": str(trainer.args.device),
        "mixed_precision": accelerator.mixed_precision,
        "zero_stage": None if plugin is None else plugin.zero_stage,
        "engine": type(trainer.model_wrapped).__name__,
        "optimizer": chain,
        "param_groups": [
            {"name": g.get("name"), "lr": g.get("initial_lr", g.get("lr"))}
            for g in (trainer.optimizer.param_groups if trainer.optimizer else [])
        ],
    }
