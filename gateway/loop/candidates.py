"""New training examples from production: corrections and answers that scored well.

Both are already scrubbed (the eval store holds nothing else) and each keeps its request id as
its source (``feedback:<id>`` or ``sample:<id>``), so every example traces back to a request.
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


def from_good_samples(rows: list[dict[str, Any]]) -> list[Candidate]:
    """A sampled answer that scored at or above the threshold is kept as it was."""
    out = []
    for row in rows:
        prompt = _prompt(row.get("request"))
        if prompt is None or not (row.get("response") or "").strip():
            continue
        conversation = [*prompt, {"role": "assistant", "content": row["response"].strip()}]
        out.append(Candidate(conversation=conversation, source=f"sample:{row['request_id']}"))
    return out
