"""Curating chat-format training examples: scrub, normalise, dedupe, resolve, guard the test set.

Pure functions over conversations (``[{"role", "content"}, ...]`` with at least one assistant
turn); no database, no files. ``curate`` runs these steps in order, and every example it drops
is reported as a ``Removal`` with its index in the input and the reason:

1. **scrub** every message content with the caller's scrubber (PII), before anything else, so
   nothing unscrubbed is ever hashed, compared or stored;
2. **normalise**: contents whitespace-trimmed, roles lowercased; an example that is then not a
   valid conversation (unknown role, no assistant turn, empty answer) is ``invalid``;
3. **leak guard**: an example whose input is a frozen test input, exactly
   (``frozen_leak_exact``) or nearly (``frozen_leak_near``), never enters training data;
4. **exact duplicates** (``duplicate_of:<index>``): the first occurrence is kept;
5. **contradictions**: examples with the same input (the messages before the last assistant
   turn) but different final outputs. The rule: an example a human gave (a source starting
   with ``feedback:``, or an identical copy of one) wins, and the other examples of that
   input are dropped; if the human answers disagree among themselves, or no example of the
   input comes from a human, every example of that input is dropped, since we cannot know
   which answer is right;
6. **near duplicates** (``near_duplicate_of:<index>``): MinHash/LSH over word 3-shingles of the
   whole conversation; the first occurrence is kept.

Contradictions are settled before near duplicates on purpose: a human correction usually
differs from the wrong answer by a word or two, and must not be dropped as a near copy of it.

Near-duplicate search (``adapters.similarity``): MinHash LSH proposes candidates, the exact
Jaccard similarity of the two sets decides, so verdicts are deterministic.

The leak guard compares inputs by their non-system turns as a set of words (a system prompt is
shared by every example of an alias and would make all inputs look alike; word 3-shingles of a
twenty-word question fall below 0.8 after a single changed word, a word set does not).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field

from adapters.config import TolerantConfig
from adapters.similarity import NearIndex, shingles, words

logger = logging.getLogger("tuneloop.curation")

Conversation = list[dict[str, str]]

ROLES = frozenset({"system", "user", "assistant"})
FEEDBACK_PREFIX = "feedback:"
SHINGLE_WORDS = 3


class CurationConfig(TolerantConfig):
    """How curation decides. Validated on construction; unknown keys are ignored with a warning
    so an older gateway can read a newer config (``model_dump`` round-trips)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)
    _logger = logger

    near_duplicate_threshold: float = Field(
        default=0.9,
        ge=0.5,
        le=1,
        description="Jaccard similarity of word 3-shingles of two whole conversations at or "
        "above which the later one is dropped as a near duplicate.",
    )
    leak_threshold: float = Field(
        default=0.8,
        ge=0.5,
        le=1,
        description="Jaccard similarity of the words of an input and a frozen test input at or "
        "above which the example is refused as a test-set leak.",
    )
    frozen_fraction: float = Field(
        default=0.15,
        ge=0.1,
        le=0.2,
        description="Share of an alias's first dataset split off as its frozen test set "
        "(at least one example).",
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of the frozen split: the same data, the same split."
    )
    num_perm: int = Field(
        default=128,
        ge=16,
        le=1024,
        description="MinHash permutations: more finds near duplicates more reliably, slower.",
    )


@dataclass(frozen=True)
class Candidate:
    """An example offered for a dataset and where it came from (a file name, ``feedback:<id>``)."""

    conversation: Conversation
    source: str


@dataclass(frozen=True)
class Removal:
    """An example ``curate`` dropped: its index in the input, its source and why."""

    index: int
    source: str
    reason: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"index": self.index, "source": self.source, "reason": self.reason}
        if self.note:
            report["note"] = self.note
        return report


@dataclass(frozen=True)
class Curated:
    """What survived (normalised, scrubbed, in input order) and what was dropped, by index."""

    kept: list[Candidate]
    removals: list[Removal]
    kept_indices: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Candidates, kept, and removals per kind of reason."""
        counts = {
            "candidates": len(self.kept) + len(self.removals),
            "kept": len(self.kept),
            "duplicates": 0,
            "near_duplicates": 0,
            "contradictions": 0,
            "frozen_leaks": 0,
            "invalid": 0,
            "frozen": 0,
        }
        for removal in self.removals:
            counts[_count_key(removal.reason)] = counts.get(_count_key(removal.reason), 0) + 1
        return counts


def _count_key(reason: str) -> str:
    if reason.startswith("duplicate_of:"):
        return "duplicates"
    if reason.startswith("near_duplicate_of:"):
        return "near_duplicates"
    if reason.startswith("frozen_leak"):
        return "frozen_leaks"
    if reason == "contradiction":
        return "contradictions"
    return reason


# --- one conversation --------------------------------------------------------------------------
def normalise(conversation: Conversation) -> Conversation:
    """Contents trimmed, roles lowercased, other keys dropped; raises ``ValueError`` when the
    result is not a conversation to learn from (unknown role, no non-empty assistant answer)."""
    if not isinstance(conversation, list) or not conversation:
        raise ValueError("a conversation is a non-empty list of messages")
    messages: Conversation = []
    for message in conversation:
        if not isinstance(message, dict):
            raise ValueError("each message is an object with a role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError("each message needs a string role and string content")
        role = role.strip().lower()
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {sorted(ROLES)}")
        messages.append({"role": role, "content": content.strip()})
    last = _last_assistant(messages)
    if not messages[last]["content"]:
        raise ValueError("the last assistant answer is empty")
    return messages


def _last_assistant(messages: Conversation) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            return index
    raise ValueError("no assistant turn to learn from")


def canonical(value: Any) -> str:
    """The canonical JSON text hashes and keys are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def input_of(conversation: Conversation) -> Conversation:
    """The normalised messages before the last assistant turn."""
    messages = normalise(conversation)
    return messages[: _last_assistant(messages)]


def input_key(conversation: Conversation) -> str:
    """Canonical JSON of the normalised messages before the last assistant turn."""
    return canonical(input_of(conversation))


def output_of(conversation: Conversation) -> str:
    """The last assistant turn's (trimmed) content."""
    messages = normalise(conversation)
    return messages[_last_assistant(messages)]["content"]


def version_hash(conversations: Sequence[Conversation]) -> str:
    """``sha256:<hex>`` over the canonical JSON of the sorted normalised examples: the same
    examples in any order give the same hash."""
    lines = sorted(canonical(normalise(conversation)) for conversation in conversations)
    digest = hashlib.sha256(("[" + ",".join(lines) + "]").encode("utf-8"))
    return f"sha256:{digest.hexdigest()}"


def scrubbed(conversation: Conversation, scrub: Callable[[str], str] | None) -> Conversation:
    """Every message content passed through ``scrub`` (unchanged without one)."""
    if scrub is None:
        return conversation
    return [
        {**message, "content": scrub(message["content"])}
        if isinstance(message, dict) and isinstance(message.get("content"), str)
        else message
        for message in conversation
    ]


# --- similarity ----------------------------------------------------------------------------------
def conversation_shingles(conversation: Conversation) -> frozenset[str]:
    """Word 3-shingles of the whole (normalised) conversation, each turn led by its role."""
    tokens = [t for m in conversation for t in (f"<{m['role']}>", *words(m["content"]))]
    return shingles(tokens, size=SHINGLE_WORDS)


def input_words(conversation: Conversation) -> frozenset[str]:
    """The words of an example's input, system turns left out unless there is nothing else."""
    messages = input_of(conversation)
    turns = [m for m in messages if m["role"] != "system"] or messages
    return frozenset(word for m in turns for word in words(m["content"]))


class LeakGuard:
    """Refuses examples whose input is a frozen test input, exactly or nearly."""

    def __init__(
        self, frozen: Sequence[Conversation], *, threshold: float, num_perm: int = 128
    ) -> None:
        self._exact = {input_key(conversation) for conversation in frozen}
        self._near = NearIndex(threshold=threshold, num_perm=num_perm)
        for index, conversation in enumerate(frozen):
            self._near.add(index, input_words(conversation))

    def check(self, conversation: Conversation) -> str | None:
        """``None`` when the example may be trained on, else ``frozen_leak_exact`` or
        ``frozen_leak_near``."""
        if input_key(conversation) in self._exact:
            return "frozen_leak_exact"
        if self._near.match(input_words(conversation)) is not None:
            return "frozen_leak_near"
        return None


# --- splitting -----------------------------------------------------------------------------------
def frozen_indices(
    conversations: Sequence[Conversation], *, fraction: float, seed: int
) -> list[int]:
    """Which examples a seeded split freezes: at least one, ``round(n * fraction)`` otherwise.

    Each example is ranked by a seeded hash of its normalised content, so the choice depends on
    the examples and the seed only, never on their order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie strictly between 0 and 1, not {fraction}")
    if not conversations:
        return []
    count = max(1, round(len(conversations) * fraction))

    def rank(index: int) -> tuple[str, int]:
        text = f"{seed}\n{canonical(normalise(conversations[index]))}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest(), index

    return sorted(sorted(range(len(conversations)), key=rank)[:count])


def split_frozen(
    conversations: Sequence[Conversation], *, fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """``(frozen, rest)``: deterministic, order-independent and seeded; both keep input order."""
    chosen = set(frozen_indices(conversations, fraction=fraction, seed=seed))
    frozen = [c for i, c in enumerate(conversations) if i in chosen]
    rest = [c for i, c in enumerate(conversations) if i not in chosen]
    return frozen, rest


# --- the pipeline --------------------------------------------------------------------------------
def curate(
    candidates: Sequence[Candidate],
    *,
    config: CurationConfig,
    frozen: Sequence[Conversation] = (),
    scrub: Callable[[str], str] | None = None,
) -> Curated:
    """Scrub, normalise, guard, dedupe and resolve ``candidates`` (see the module docstring)."""
    removals: list[Removal] = []
    guard = LeakGuard(frozen, threshold=config.leak_threshold, num_perm=config.num_perm)
    survivors: list[tuple[int, Candidate]] = []
    first_of: dict[str, int] = {}
    corrected: set[str] = set()  # examples a human confirmed, even when a duplicate is dropped
    for index, candidate in enumerate(candidates):
        try:
            conversation = normalise(scrubbed(candidate.conversation, scrub))
        except ValueError as exc:
            removals.append(Removal(index, candidate.source, "invalid", str(exc)))
            continue
        leak = guard.check(conversation)
        if leak is not None:
            removals.append(Removal(index, candidate.source, leak))
            continue
        key = canonical(conversation)
        if _is_feedback(candidate.source):
            corrected.add(key)
        if key in first_of:
            removals.append(Removal(index, candidate.source, f"duplicate_of:{first_of[key]}"))
            continue
        first_of[key] = index
        survivors.append((index, Candidate(conversation, candidate.source)))

    survivors, dropped = _resolve_contradictions(survivors, corrected=corrected)
    removals.extend(dropped)
    survivors, dropped = _drop_near_duplicates(survivors, config=config)
    removals.extend(dropped)
    removals.sort(key=lambda removal: removal.index)
    return Curated(
        kept=[candidate for _, candidate in survivors],
        removals=removals,
        kept_indices=[index for index, _ in survivors],
    )


def _is_feedback(source: str) -> bool:
    return source.startswith(FEEDBACK_PREFIX)


def _resolve_contradictions(
    survivors: list[tuple[int, Candidate]], *, corrected: set[str]
) -> tuple[list[tuple[int, Candidate]], list[Removal]]:
    """Drop every example of an input whose outputs disagree, unless the ones a human gave
    (``corrected``: canonical conversations seen from a ``feedback:`` source) agree."""
    by_input: dict[str, list[tuple[int, Candidate]]] = {}
    for item in survivors:
        by_input.setdefault(input_key(item[1].conversation), []).append(item)
    dropped: dict[int, Removal] = {}
    for group in by_input.values():
        if len({output_of(c.conversation) for _, c in group}) < 2:
            continue
        winners = [(i, c) for i, c in group if canonical(c.conversation) in corrected]
        settled = bool(winners) and len({output_of(c.conversation) for _, c in winners}) == 1
        for index, candidate in group:
            if settled and canonical(candidate.conversation) in corrected:
                continue
            note = (
                f"overridden by a human correction (index {winners[0][0]})"
                if settled
                else f"{len(group)} examples of this input disagree"
            )
            dropped[index] = Removal(index, candidate.source, "contradiction", note)
    kept = [item for item in survivors if item[0] not in dropped]
    return kept, list(dropped.values())


def _drop_near_duplicates(
    survivors: Iterable[tuple[int, Candidate]], *, config: CurationConfig
) -> tuple[list[tuple[int, Candidate]], list[Removal]]:
    index_ = NearIndex(threshold=config.near_duplicate_threshold, num_perm=config.num_perm)
    kept: list[tuple[int, Candidate]] = []
    dropped: list[Removal] = []
    for index, candidate in survivors:
        shingles = conversation_shingles(candidate.conversation)
        original = index_.match(shingles)
        if original is not None:
            dropped.append(Removal(index, candidate.source, f"near_duplicate_of:{original}"))
            continue
        index_.add(index, shingles)
        kept.append((index, candidate))
    return kept, dropped


def curate_and_freeze(
    candidates: Sequence[Candidate],
    *,
    config: CurationConfig,
    scrub: Callable[[str], str] | None = None,
) -> tuple[list[Conversation], Curated]:
    """An alias's first dataset: ``(frozen, curated)``.

    The frozen test set is a seeded split (``config.frozen_fraction``, ``config.seed``) of the
    curated examples, so it holds no duplicates or contradictions; the rest is then curated
    against it, so no near copy of a frozen input stays in training data either. The frozen
    examples are reported with the reason ``frozen``.
    """
    first = curate(candidates, config=config, scrub=scrub)
    chosen = frozen_indices(
        [c.conversation for c in first.kept], fraction=config.frozen_fraction, seed=config.seed
    )
    frozen = [first.kept[i].conversation for i in chosen]
    moved = {first.kept_indices[i] for i in chosen}
    second = curate(candidates, config=config, frozen=frozen, scrub=scrub)
    removals = [
        Removal(r.index, r.source, "frozen", "moved to the frozen test set")
        if r.index in moved
        else r
        for r in second.removals
    ]
    return frozen, Curated(second.kept, removals, second.kept_indices)
