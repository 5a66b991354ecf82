"""New training examples from production: corrections, confirmed answers, and answers that
scored well.

All are already scrubbed (the eval store holds nothing else) and each keeps its request id as
its source (``feedback:<id>``, ``confirmed:<id>`` or ``sample:<id>``), so every example traces
back to a request.

The loop must not teach itself its own mistakes: a sampled answer that only passed format
checks (JSON valid, schema, regex) can still be wrong ("Kyre" for Kyoto scores 1.0 under a
JSON-schema rubric). So a sampled answer is a candidate only when its score holds a content
check (``CONTENT_CHECKS``) and every content check on it passed, or when a human confirmed it
(feedback with a high score and no correction); otherwise only corrections are learnt from.
"""

from __future__ import annotations

from typing import Any

from adapters.curation import Candidate

Conversation = list[dict[str, str]]


def _prompt(request: dict[str, Any] | None) -> Conversation | None:
    """The client's messages without a trailing assistant turn; None for text completions."""
    messages = (request or {}).get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    prompt = [
        {"role": str(m.get("role")), "content": m.get("content")}
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    ]
    while prompt and prompt[-1]["role"] == "assistant":
        prompt.pop()
    return prompt if any(m["role"] == "user" for m in prompt) else None


def from_corrections(rows: list[dict[str, Any]]) -> list[Candidate]:
    """A correction posted to /v1/feedback becomes the answer to its sampled request."""
    out = []
    for row in rows:
        prompt = _prompt(row.get("request"))
        if prompt is None or not (row.get("correction") or "").strip():
            continue
        conversation = [*prompt, {"role": "assistant", "content": row["correction"].strip()}]
        out.append(Candidate(conversation=conversation, source=f"feedback:{row['request_id']}"))
    return out


def from_confirmations(rows: list[dict[str, Any]]) -> list[Candidate]:
    """A sampled answer a human confirmed (well-scored feedback, no correction) is kept."""
    return _kept(rows, source="confirmed")


def _kept(rows: list[dict[str, Any]], *, source: str) -> list[Candidate]:
    """Each row's prompt with its own answer; rows without a chat prompt or answer are skipped."""
    out = []
    for row in rows:
        prompt = _prompt(row.get("request"))
        if prompt is None or not (row.get("response") or "").strip():
            continue
        conversation = [*prompt, {"role": "assistant", "content": row["response"].strip()}]
        out.append(Candidate(conversation=conversation, source=f"{source}:{row['request_id']}"))
    return out


# Checks that judge what an answer says, not only its shape.
CONTENT_CHECKS = frozenset({"reference_similarity", "llm_judge", "grounded"})


def content_checked(checks: list[dict[str, Any]]) -> bool:
    """Whether a score's checks include a content check and every content check passed."""
    content = [c for c in checks if isinstance(c, dict) and c.get("type") in CONTENT_CHECKS]
    return bool(content) and all(c.get("passed") is True for c in content)


def from_good_samples(rows: list[dict[str, Any]]) -> list[Candidate]:
    """A sampled answer that scored at or above the threshold, and passed a content check, is
    kept as it was."""
    return _kept([r for r in rows if content_checked(r.get("checks") or [])], source="sample")
