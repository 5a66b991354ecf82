"""LoRA training with PEFT on the prepared base model, on the CPU or a GPU.

``train`` is meant to run in a process of its own (``tuneloop train`` is one): it holds the
whole model in memory and keeps the cores busy for minutes. It writes the adapter to a staging
folder beside ``out`` and renames it into place, with ``training_report.json`` beside the
weights, so a crash never leaves a half-written adapter where the registry could find it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.datasets import IGNORE_INDEX, Example, dataset_hash, encode, load_conversations, split

logger = logging.getLogger("tuneloop.train")

REPORT_NAME = "training_report.json"
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainConfig(BaseModel):
    """What to train, on what, and how hard. Every field has a sensible default but the paths."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="Chat-format JSONL ({'messages': [...]} per line).")
    out: Path = Field(description="Folder the adapter is written to (must not exist).")
    base_model: Path = Field(description="Prepared base model folder.")
    rank: int = Field(default=8, ge=1, le=256, description="LoRA rank r.")
    alpha: int = Field(default=16, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS), description="Modules LoRA wraps."
    )
    epochs: int = Field(default=3, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps."
    )
    lr: float = Field(default=1e-3, gt=0, description="AdamW learning rate.")
    batch_size: int = Field(default=8, ge=1, description="Examples per optimizer step.")
    max_length: int = Field(default=512, ge=16, description="Tokens kept per example.")
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="Share held out.")
    eval_every: int = Field(default=5, ge=1, description="Steps between validation passes.")
    patience: int = Field(
        default=2, ge=1, description="Validation passes without improvement before stopping."
    )
    seed: int = Field(default=0, description="Seed for the split, shuffling and init.")

    @model_validator(mode="after")
    def _paths(self) -> TrainConfig:
        if not self.data.is_file():
            raise ValueError(f"data file {self.data} does not exist")
        if self.out.exists():
            raise ValueError(f"output folder {self.out} already exists")
        if not (self.base_model / "config.json").is_file():
            raise ValueError(f"{self.base_model} is not a model folder (no config.json)")
        return self


class TrainingReport(BaseModel):
    """Written beside the adapter as ``training_report.json``: its lineage and its curve."""

    dataset_hash: str
    dataset_path: str
    base_model: str
    rank: int
    alpha: int
    target_modules: list[str]
    train_examples: int
    val_examples: int
    steps: int
    stopped_early: bool
    train_losses: list[float]
    val_losses: list[float]
    best_val_loss: float | None
    wall_seconds: float
    host: str


StepCallback = Callable[[int, int, float], None]  # (step, total_steps, loss)


def _batches(examples: list[Example], size: int, rng: random.Random) -> list[list[Example]]:
    order = examples[:]
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _collate(batch: list[Example], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE_INDEX] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def _mean_loss(model: Any, examples: list[Example], size: int, pad_id: int) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), size):
            batch = examples[start : start + size]
            total += float(model(**_collate(batch, pad_id)).loss) * len(batch)
            count += len(batch)
    model.train()
    return total / max(count, 1)


def train(config: TrainConfig, *, on_step: StepCallback | None = None) -> TrainingReport:
    """Train one LoRA adapter as ``config`` says and return its report."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    digest = dataset_hash(config.data)
    train_rows, val_rows = split(
        load_conversations(config.data), val_fraction=config.val_fraction, seed=config.seed
    )
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_set = [encode(tokenizer, rows, max_length=config.max_length) for rows in train_rows]
    val_set = [encode(tokenizer, rows, max_length=config.max_length) for rows in val_rows]

    model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    train_losses: list[float] = []
    val_losses: list[float] = []
    best_val, best_state, stale, step, stopped_early = math.inf, None, 0, 0, False
    model.train()
    while step < total and not stopped_early:
        for batch in _batches(train_set, config.batch_size, rng):
            loss = model(**_collate(batch, pad_id)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            value = float(loss.detach())
            train_losses.append(round(value, 5))
            if on_step is not None:
                on_step(step, total, value)
            if val_set and (step % config.eval_every == 0 or step == total):
                val = _mean_loss(model, val_set, config.batch_size, pad_id)
                val_losses.append(round(val, 5))
                if val < best_val - 1e-4:
                    best_val, stale = val, 0
                    best_state = {
                        k: v.detach().clone() for k, v in model.state_dict().items() if "lora" in k
                    }
                else:
                    stale += 1
                    if stale >= config.patience:
                        stopped_early = True
                        break
            if step >= total:
                break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)  # keep the best validation point

    report = TrainingReport(
        dataset_hash=digest,
        dataset_path=str(config.data),
        base_model=str(config.base_model),
        rank=config.rank,
        alpha=config.alpha,
        target_modules=list(config.target_modules),
        train_examples=len(train_set),
        val_examples=len(val_set),
        steps=step,
        stopped_early=stopped_early,
        train_losses=train_losses,
        val_losses=val_losses,
        best_val_loss=None if best_val == math.inf else round(best_val, 5),
        wall_seconds=round(time.monotonic() - started, 2),
        host=platform.node(),
    )
    _save(model, config.out, report)
    logger.info(
        "event=adapter_trained out=%s steps=%d best_val_loss=%s seconds=%.1f dataset=%s",
        config.out,
        step,
        report.best_val_loss,
        report.wall_seconds,
        digest,
    )
    return report


def _save(model: Any, out: Path, report: TrainingReport) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(0o755)
        model.save_pretrained(staging)
        (staging / REPORT_NAME).write_text(report.model_dump_json(indent=2))
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_report(adapter_dir: Path) -> TrainingReport | None:
    path = adapter_dir / REPORT_NAME
    if not path.is_file():
        return None
    return TrainingReport.model_validate(json.loads(path.read_text()))
