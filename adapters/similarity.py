"""Near-duplicate search over sets of shingles: MinHash LSH proposes, exact Jaccard decides.

LSH (``datasketch``) is queried at a threshold lowered by ``LSH_SLACK`` so that pairs at the
real threshold are almost never missed (with 128 permutations, a pair at Jaccard 0.8 is a
candidate of a 0.6 index 98.5% of the time); each candidate is then confirmed with the exact
Jaccard similarity of the two sets, so a verdict never rests on MinHash noise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from datasketch import MinHash, MinHashLSH

LSH_SLACK = 0.2
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Case-folded word tokens (punctuation dropped)."""
    return _WORD.findall(text.casefold())


def shingles(tokens: Sequence[str], *, size: int) -> frozenset[str]:
    """Runs of ``size`` consecutive tokens; fewer tokens than that make one shingle."""
    if len(tokens) < size:
        return frozenset({" ".join(tokens)}) if tokens else frozenset()
    return frozenset(" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearIndex:
    """Sets indexed by MinHash LSH; ``match`` is the lowest key whose exact Jaccard with the
    query is at least ``threshold``."""

    def __init__(self, *, threshold: float, num_perm: int) -> None:
        self._threshold = threshold
        self._num_perm = num_perm
        self._lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_SLACK), num_perm=num_perm)
        self._sets: dict[int, frozenset[str]] = {}

    def _minhash(self, items: frozenset[str]) -> MinHash:
        minhash = MinHash(num_perm=self._num_perm)
        minhash.update_batch([item.encode("utf-8") for item in sorted(items)])
        return minhash

    def add(self, key: int, items: frozenset[str]) -> None:
        if not items:  # nothing to compare: only exact checks apply
            return
        self._sets[key] = items
        self._lsh.insert(key, self._minhash(items))

    def match(self, items: frozenset[str]) -> int | None:
        if not items or not self._sets:
            return None
        found = [
            key
            for key in self._lsh.query(self._minhash(items))
            if jaccard(items, self._sets[key]) >= self._threshold
        ]
        return min(found) if found else None
