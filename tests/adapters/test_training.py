"""Adapters trained by our own trainer: complete folders with their lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.datasets import dataset_hash
from adapters.training import TrainConfig, read_report, train
from gateway.settings import Settings
from tests.helpers import EXAMPLE_DATA


def test_trained_adapter_has_weights_config_and_report(trained_adapters: dict[str, Path]) -> None:
    folder = trained_adapters["v1"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["peft_type"] == "LORA"
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (folder / "adapter_model.safetensors").stat().st_size > 1_000_000
    report = read_report(folder)
    assert report is not None
    assert report.dataset_hash == dataset_hash(EXAMPLE_DATA)
    assert report.steps == 4 and len(report.train_losses) == 4
    assert report.val_examples == 6 and len(report.val_losses) == 2
    assert report.train_losses[-1] < report.train_losses[0], "it learned something"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no staging left"


def test_early_stopping_when_validation_stops_improving(
    base_settings: Settings, tmp_path: Path
) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("".join(EXAMPLE_DATA.read_text().splitlines(keepends=True)[:12]))
    config = TrainConfig(
        data=small, out=tmp_path / "a", base_model=base_settings.base_model_path,
        lr=1e-12, batch_size=4, eval_every=1, patience=1, max_steps=20, val_fraction=0.25,
    )  # fmt: skip
    report = train(config)
    assert report.stopped_early
    assert report.steps == 2, "first pass sets the best, the second fails to improve: stop"


def test_refuses_existing_output_and_missing_data(base_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already exists"):
        TrainConfig(data=EXAMPLE_DATA, out=tmp_path, base_model=base_settings.base_model_path)
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig(
            data=tmp_path / "nope.jsonl", out=tmp_path / "x",
            base_model=base_settings.base_model_path,
        )  # fmt: skip
