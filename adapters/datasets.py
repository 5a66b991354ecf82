"""Chat-format training data (OpenAI fine-tuning JSONL): loading, hashing, splitting, masking.

Each line is ``{"messages": [{"role", "content"}, ...]}`` with at least one assistant turn.
Loss is taken on assistant turns only: every other token is labelled ``IGNORE_INDEX``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

IGNORE_INDEX = -100
_ROLES = {"system", "user", "assistant"}


class DatasetError(ValueError):
    """The data file is unusable; the message names the line and the problem."""


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def dataset_hash(path: Path) -> str:
    """``sha256:<hex>`` of the file's bytes: the lineage key recorded with every adapter."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def load_conversations(path: Path) -> list[list[dict[str, str]]]:
    """Read and check every line; the first bad line stops with its number and reason."""
    conversations: list[list[dict[str, str]]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise DatasetError(f"{path}:{number}: needs a non-empty 'messages' list")
            for message in messages:
                if (
                    not isinstance(message, dict)
                    or message.get("role") not in _ROLES
                    or not isinstance(message.get("content"), str)
                ):
                    raise DatasetError(
                        f"{path}:{number}: each message needs a role in {sorted(_ROLES)} "
                        "and string content"
                    )
            if not any(m["role"] == "assistant" for m in messages):
                raise DatasetError(f"{path}:{number}: no assistant turn to learn from")
            conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise DatasetError(f"{path}: no examples")
    return conversations


def split(
    conversations: list[list[dict[str, str]]], *, val_fraction: float, seed: int
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Deterministic train/validation split; validation keeps at least one example."""
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 1 else 0
    val = [conversations[i] for i in order[:n_val]]
    train = [conversations[i] for i in order[n_val:]]
    return train, val


def _ids(tokenizer: ChatTokenizer, messages: list[dict[str, str]], *, prompt: bool) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=prompt, return_dict=False
    )
    if isinstance(rendered, dict):  # some tokenizers return a BatchEncoding regardless
        rendered = rendered["input_ids"]
    return list(rendered)


def encode(tokenizer: ChatTokenizer, messages: list[dict[str, str]], *, max_length: int) -> Example:
    """Token ids of the whole conversation, labels only on the assistant turns' tokens."""
    input_ids = _ids(tokenizer, messages, prompt=False)
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:index], prompt=True)) if index else 0
        end = len(_ids(tokenizer, messages[: index + 1], prompt=False))
        labels[start:end] = input_ids[start:end]
    return Example(input_ids=input_ids[:max_length], labels=labels[:max_length])
