"""Split documents into overlapping chunks on word boundaries."""

from __future__ import annotations


def chunk_text(text: str, *, size: int = 200, overlap: int = 40) -> list[str]:
    """Chunks of at most ``size`` words, each sharing ``overlap`` words with the previous one.

    A text shorter than ``size`` is one chunk; an empty text has none.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    words = text.split()
    if not words:
        return []
    step = size - overlap
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return chunks
