"""Chat JSONL: clear errors per line, and loss only on what the assistant said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.datasets import (
    IGNORE_INDEX,
    DatasetError,
    dataset_hash,
    encode,
    load_conversations,
    split,
)
from gateway.settings import Settings
from tests.helpers import EXAMPLE_DATA


@pytest.fixture(scope="module")
def tokenizer(base_settings: Settings):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_settings.base_model_path)


def test_labels_cover_exactly_the_assistant_turns(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    example = encode(tokenizer, messages, max_length=512)
    learned = [
        tok
        for tok, label in zip(example.input_ids, example.labels, strict=True)
        if label != IGNORE_INDEX
    ]
    text = tokenizer.decode(learned)
    assert text == "Hello!<|im_end|>\nGoodbye.<|im_end|>\n"
    assert example.labels[: len(example.labels) // 3].count(IGNORE_INDEX) > 0


def test_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not JSON"):
        load_conversations(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}))
    with pytest.raises(DatasetError, match="no assistant turn"):
        load_conversations(path)
    path.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}))
    with pytest.raises(DatasetError, match="role"):
        load_conversations(path)


def test_split_is_deterministic_and_disjoint() -> None:
    rows = load_conversations(EXAMPLE_DATA)
    train_a, val_a = split(rows, val_fraction=0.1, seed=3)
    train_b, val_b = split(rows, val_fraction=0.1, seed=3)
    assert (train_a, val_a) == (train_b, val_b)
    assert len(val_a) == 6 and len(train_a) + len(val_a) == len(rows)
    assert not [r for r in val_a if r in train_a]


def test_hash_is_of_the_bytes(tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(EXAMPLE_DATA.read_bytes())
    assert dataset_hash(copy) == dataset_hash(EXAMPLE_DATA)
    copy.write_bytes(EXAMPLE_DATA.read_bytes() + b"\n")
    assert dataset_hash(copy) != dataset_hash(EXAMPLE_DATA)
