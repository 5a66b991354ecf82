"""Checks by embedding similarity: grounded (answer vs retrieved chunks) and
reference_similarity (answer vs a reference answer).

Both need the scorer's ``embed`` callable; without one, or when it fails, they do not apply
(with a detail saying why) rather than failing the score. Rows returned by ``embed`` are
normalised again here, so cosine similarity is a dot product even for a sloppy embedder.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import Field

from eval.checks.base import (
    TYPE_HELP,
    CheckConfig,
    Embed,
    Outcome,
    ScoreInput,
    Tools,
    clip,
    not_applicable,
)

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class EmbeddingFailed(RuntimeError):
    """The embedder raised or returned something other than one row per text."""


def split_sentences(text: str, *, min_words: int = 1) -> list[str]:
    """Sentences of ``text`` (split after . ! ? and at line breaks) with at least ``min_words``."""
    pieces = (piece.strip() for piece in SENTENCE_END.split(text))
    return [piece for piece in pieces if piece and len(piece.split()) >= min_words]


def embed_rows(embed: Embed, texts: list[str]) -> np.ndarray:
    """One unit-length float64 row per text; raises ``EmbeddingFailed``."""
    try:
        rows = np.asarray(embed(texts), dtype=np.float64)
    except Exception as exc:  # the embedder is the caller's code: its failure is this check's
        raise EmbeddingFailed(f"embedding failed: {type(exc).__name__}: {exc}") from exc
    if rows.ndim != 2 or rows.shape[0] != len(texts):
        raise EmbeddingFailed(
            f"embedding failed: expected {len(texts)} rows, got shape {rows.shape}"
        )
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


class GroundedCheck(CheckConfig):
    """Share of the answer's sentences supported by a retrieved chunk.

    A sentence is supported when its cosine similarity to some chunk is at least ``threshold``.
    Not applicable without retrieved chunks or without a sentence of ``min_words`` words.
    """

    type: Literal["grounded"] = Field(default="grounded", description=TYPE_HELP)
    threshold: float = Field(
        default=0.5, ge=-1, le=1, description="Cosine similarity a sentence needs to a chunk."
    )
    pass_threshold: float = Field(
        default=0.8, ge=0, le=1, description="Share of supported sentences needed to pass."
    )
    min_words: int = Field(
        default=3, ge=1, description="Shorter sentences (e.g. 'Sure.') are not checked."
    )

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        chunks = [chunk for chunk in item.context if chunk.strip()]
        if not chunks:
            return not_applicable("no retrieved chunks")
        sentences = split_sentences(item.answer, min_words=self.min_words)
        if not sentences:
            return not_applicable(f"no sentence of {self.min_words}+ words to check")
        if tools.embed is None:
            return not_applicable("no embedder configured")
        try:
            rows = embed_rows(tools.embed, sentences + chunks)
        except EmbeddingFailed as exc:
            return not_applicable(str(exc))
        best = (rows[: len(sentences)] @ rows[len(sentences) :].T).max(axis=1)
        supported = best >= self.threshold
        share = float(supported.mean())
        detail = f"{int(supported.sum())}/{len(sentences)} sentences supported"
        if not supported.all():
            first = sentences[int(np.argmin(supported))]
            detail += f"; first unsupported: {clip(first, 120)!r}"
        return Outcome(share, share >= self.pass_threshold, detail)


class ReferenceSimilarityCheck(CheckConfig):
    """Cosine similarity of the answer to the reference answer (negative values count as 0).

    Not applicable without a reference (live traffic has none; offline sets do).
    """

    type: Literal["reference_similarity"] = Field(
        default="reference_similarity", description=TYPE_HELP
    )
    threshold: float = Field(default=0.7, ge=0, le=1, description="Similarity needed to pass.")

    def evaluate(self, item: ScoreInput, tools: Tools) -> Outcome:
        if item.reference is None or not item.reference.strip():
            return not_applicable("no reference answer")
        if not item.answer.strip():
            return Outcome(0.0, False, "empty answer")
        if tools.embed is None:
            return not_applicable("no embedder configured")
        try:
            rows = embed_rows(tools.embed, [item.answer, item.reference])
        except EmbeddingFailed as exc:
            return not_applicable(str(exc))
        score = float(np.clip(rows[0] @ rows[1], 0.0, 1.0))
        return Outcome(score, score >= self.threshold, f"similarity {score:.3f}")
