"""LoRA training of a pool model on preference data: DPO on pairs, or SFT on best answers.

Reused by `multisample train` (search) and by online adaptation in `select` (bandits),
so it knows nothing of run directories: it takes examples (user turns and
answers), renders them as the engine sends them to the target model (its system prompt and
chat template, or a base model's plain text), and writes a standard PEFT adapter folder
(adapter_config.json + adapter_model.safetensors) that vLLM's LoRARequest loads beside the
base model.

TRL, PEFT, torch and transformers are imported inside the functions: importing this
module costs nothing, and nothing else in the package pulls them in.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from rich.console import Console

from multisample.engine.backends.base import render_base_prompt
from multisample.engine.config import Settings
from multisample.engine.progress import progress_bar
from multisample.engine.types import Message, message_dicts

TRAINING = "training.json"
"""The record each adapter folder holds of how it was trained."""
OPTIMIZER = "optimizer.pt"
"""The AdamW state an adapter folder keeps for the next update (a carried optimizer)."""

Method = Literal["dpo", "sft"]
PromptFormat = Literal["chat", "base"]


@dataclass(frozen=True)
class Example:
    """One training example, independent of the target model: the prompt's turns
    (without the generating model's system prompt: the target's own is added), the
    preferred answer and, for DPO, the rejected one."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str | None = None


class TrainingSettings(Settings):
    """How an adapter is trained. `multisample train` derives its options from this class
    (with the options of its own: which model, the split, the seed), and select's `adapt:`
    is this class with the settings of online updates added; every field, with the seed,
    is recorded in each adapter's training.json."""

    method: Method = "dpo"
    """dpo: on preference pairs (the chosen answer against the rejected one); sft: on the
    chosen answers alone."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training examples."""
    max_steps: int | None = Field(None, ge=1, validation_alias=AliasChoices("max_steps", "steps"))
    """Stop after this many optimizer steps (overrides `epochs`); `steps` in select
    configs written before the settings were shared."""
    learning_rate: float = Field(5e-5, gt=0)
    """AdamW learning rate."""
    rank: int = Field(16, ge=1)
    """LoRA rank, on every linear layer (a served adapter's must be at most its base's
    max_lora_rank)."""
    alpha: int | None = Field(None, ge=1)
    """LoRA alpha (the update is scaled by alpha / rank); None: twice the rank."""
    batch_size: int = Field(4, ge=1)
    """Examples per optimizer step."""
    beta: float = Field(0.1, gt=0)
    """DPO's KL weight (dpo only)."""
    max_length: int = Field(384, ge=16)
    """Tokens kept per example (prompt + answer); longer ones are truncated."""
    schedule: Literal["linear", "constant"] = "linear"
    """The learning rate over the steps: linear decay to zero (transformers' default) or
    constant."""

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank

    def record(self, seed: int) -> dict[str, Any]:
        """What training.json records: these settings (alpha resolved) and the seed."""
        fields = self.model_dump(include=set(TrainingSettings.model_fields))
        return {**fields, "alpha": self.lora_alpha, "seed": seed}


@dataclass
class TrainingResult:
    steps: int
    loss_curve: list[dict[str, float]]
    """Per logged (optimizer) step: step, loss, learning rate, and for DPO the reward
    margin."""
    validation_loss: float | None
    seconds: float
    """Wall time of the whole call (loading, preparing the data, training, evaluating)."""
    train_seconds: float
    """Wall time of the optimizer steps alone."""
    examples_seen: int
    """Training examples the steps went through (an epoch's last batch may be short)."""
    versions: dict[str, str] = field(default_factory=dict)


def target_prompt(
    prompt: Sequence[Message], prompt_format: PromptFormat, system_prompt: str | None
) -> Any:
    """The prompt exactly as the engine sends it to the target: its own system prompt,
    then `prompt`; as messages for a chat model (TRL applies its chat template, as the
    engine does), as `render_base_prompt` text for a base model."""
    turns = (*([Message("system", system_prompt)] if system_prompt else []), *prompt)
    if prompt_format == "base":
        return render_base_prompt(turns)
    return message_dicts(turns)


def target_answer(text: str, prompt_format: PromptFormat) -> Any:
    return text if prompt_format == "base" else [{"role": "assistant", "content": text}]


def dataset_rows(
    examples: Sequence[Example],
    method: Method,
    prompt_format: PromptFormat,
    system_prompt: str | None,
) -> list[dict[str, Any]]:
    """TRL rows for the target: conversational for a chat model, plain text for a base one."""
    rows = []
    for example in examples:
        prompt = target_prompt(example.prompt, prompt_format, system_prompt)
        chosen = target_answer(example.chosen, prompt_format)
        if method == "dpo":
            if example.rejected is None:
                raise ValueError("a DPO example needs a rejected answer")
            rejected = target_answer(example.rejected, prompt_format)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        else:
            # Prompt-completion: the loss covers the answer only, not the prompt.
            rows.append({"prompt": prompt, "completion": chosen})
    return rows


def examples_seen(examples: int, batch_size: int, steps: int) -> int:
    """Examples `steps` optimizer steps went through, epoch after epoch."""
    per_epoch = -(-examples // batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * examples + min(rest * batch_size, examples)


def library_versions() -> dict[str, str]:
    names = ("trl", "peft", "transformers", "torch")
    return {name: importlib.metadata.version(name) for name in names}


def _quiet() -> None:
    """Training libraries talk a lot; the progress bar and the result say what matters."""
    import datasets
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("trl", "peft", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(trl|peft|transformers|accelerate|torch)\b")


def _progress_callback(console: Console) -> Any:
    """A TrainerCallback drawing a rich bar over optimizer steps (on `console`)."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bar = progress_bar(console)
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.start()
            self.task = self.bar.add_task("training", total=state.max_steps, line="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.update(self.task, completed=state.global_step)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs and "loss" in logs:
                self.bar.update(self.task, line=f"loss {logs['loss']:.4f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.stop()

    return RichProgress()


def trainer_arguments(
    settings: TrainingSettings, output: Path, seed: int, on_gpu: bool
) -> dict[str, Any]:
    """TRL's DPOConfig / SFTConfig fields for these settings (a bar replaces its logging)."""
    arguments: dict[str, Any] = {
        "output_dir": str(output),
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "num_train_epochs": settings.epochs,
        "max_steps": settings.max_steps or -1,
        "learning_rate": settings.learning_rate,
        "max_length": settings.max_length,
        "seed": seed,
        "data_seed": seed,
        "lr_scheduler_type": settings.schedule,
        "use_cpu": not on_gpu,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if settings.method == "dpo":
        arguments["beta"] = settings.beta
    return arguments


def loss_curve(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Per logged optimizer step: its step, loss, learning rate and, for DPO, the reward
    margin."""
    return [
        {
            "step": entry["step"],
            "loss": entry["loss"],
            **({"learning_rate": entry["learning_rate"]} if "learning_rate" in entry else {}),
            **({"margin": entry["rewards/margins"]} if "rewards/margins" in entry else {}),
        }
        for entry in log_history
        if "loss" in entry and "eval_loss" not in entry
    ]


def _model_and_lora(
    base_folder: Path, settings: TrainingSettings, start_from: Path | None, full: bool
) -> tuple[Any, Any]:
    """The base model in float32, and a new LoRA's config; or, to go on training
    `start_from`, the model with that LoRA loaded (trainable) and no new config. With
    `full`, the model (`start_from`'s weights, else the base's) and no LoRA at all."""
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    if full:
        weights = base_folder if start_from is None else start_from
        return AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32), None
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    if start_from is not None:
        return PeftModel.from_pretrained(model, str(start_from), is_trainable=True), None
    lora = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return model, lora


def train_adapter(
    base_folder: Path,
    train: Sequence[Example],
    validation: Sequence[Example],
    settings: TrainingSettings,
    output: Path,
    *,
    seed: int = 0,
    prompt_format: PromptFormat = "chat",
    system_prompt: str | None = None,
    console: Console | None = None,
    start_from: Path | None = None,
    progress: bool = True,
    carry_optimizer: bool = False,
    full: bool = False,
) -> TrainingResult:
    """Train a LoRA on `base_folder`'s model and write the PEFT folder to `output`; with
    `full`, train every weight and write a model folder (float32) there instead.

    `start_from`, a LoRA folder of the same base (with `full`, a model folder), is
    trained on instead of a new LoRA (its rank and alpha, not the settings', apply):
    online adaptation takes a few more steps from the last version. `output` is written
    in place (callers that need atomicity train into a temporary folder and rename it).
    Runs on the CPU unless a GPU is visible. `progress` draws a bar over the optimizer
    steps on `console`. With `carry_optimizer`, the AdamW state is saved in `output`
    (OPTIMIZER) and, when `start_from` holds one, training starts from it: one optimizer
    across updates, its moments and step count going on, as the Co-UCB authors keep
    theirs across the whole stream.
    """
    _quiet()
    import datasets
    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    started = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model, lora = _model_and_lora(base_folder, settings, start_from, full)
    if carry_optimizer and lora is not None:
        from peft import get_peft_model

        # Wrapped here, not by the trainer: the optimizer must see the LoRA's weights.
        model, lora = get_peft_model(model, lora), None
    rows = dataset_rows(train, settings.method, prompt_format, system_prompt)
    held_out = dataset_rows(validation, settings.method, prompt_format, system_prompt)
    dpo = settings.method == "dpo"
    config, trainer_class = (DPOConfig, DPOTrainer) if dpo else (SFTConfig, SFTTrainer)
    trainer: Any = trainer_class(
        model=model,
        args=config(**trainer_arguments(settings, output, seed, torch.cuda.is_available())),
        train_dataset=datasets.Dataset.from_list(rows),
        eval_dataset=datasets.Dataset.from_list(held_out) if held_out else None,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[_progress_callback(console or Console(stderr=True))] if progress else [],
        optimizers=_carried_optimizer(model, settings, start_from)
        if carry_optimizer
        else (None, None),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the bar replaces it
    metrics = trainer.train().metrics
    validation_loss = trainer.evaluate()["eval_loss"] if held_out else None
    # A LoRA: adapter_config.json + adapter_model.safetensors; full: config + weights.
    trainer.model.save_pretrained(str(output))
    if carry_optimizer:
        torch.save(trainer.optimizer.state_dict(), output / OPTIMIZER)
    steps = int(trainer.state.global_step)
    result = TrainingResult(
        steps=steps,
        loss_curve=loss_curve(trainer.state.log_history),
        validation_loss=None if validation_loss is None else float(validation_loss),
        seconds=round(time.perf_counter() - started, 2),
        train_seconds=round(float(metrics["train_runtime"]), 2),
        examples_seen=examples_seen(len(rows), settings.batch_size, steps),
        versions=library_versions(),
    )
    del trainer, model
    _give_memory_back()
    return result


def _give_memory_back() -> None:
    """Return what training freed to the system. The trainer's reference cycles wait for
    the collector, and glibc keeps freed memory in its arenas: after two full updates of
    SmolLM2-135M the process held 3.05 GiB, 0.72 after this. `select` trains between
    rounds in the process that serves them, beside the engines, so that memory counts."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _carried_optimizer(
    model: Any, settings: TrainingSettings, start_from: Path | None
) -> tuple[Any, None]:
    """AdamW over the trained weights (one group, no weight decay, as the trainer's
    default), with the state `start_from` saved (moments and step count) when it saved
    one; the scheduler is the trainer's own."""
    import torch

    weights = [w for w in model.parameters() if w.requires_grad]
    optimizer = torch.optim.AdamW(weights, lr=settings.learning_rate, weight_decay=0.0)
    if start_from is not None and (start_from / OPTIMIZER).exists():
        optimizer.load_state_dict(torch.load(start_from / OPTIMIZER, weights_only=True))
        for group in optimizer.param_groups:  # this update's rate, not the saved one's
            group["lr"] = group["initial_lr"] = settings.learning_rate
    return optimizer, None


def merge_adapter(base_folder: Path, adapter: Path, output: Path) -> None:
    """Write to `output` the base model's weights with LoRA `adapter` merged in, in the
    base's own dtype and tensor names: a folder an engine loads in place of its weights
    (`ModelPool.load_weights`), so an adapted model runs at its base's speed."""
    _quiet()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(output), safe_serialization=True)
