"""Retrieval-augmented chat: the query, the sources message, and the citations."""

from __future__ import annotations

import json
from typing import Any, Protocol

from gateway.collections.protocol import Citation
from gateway.exceptions import InvalidRequest
from gateway.openai.protocol import ChatMessage
from gateway.protocol import RetrievalOptions
from retrieval.collections import Hit

SOURCES_HEADER = (
    "Answer using the numbered sources below when they are relevant, and cite them like [1]. "
    "If they do not contain the answer, say so.\n\nSources:"
)


class Retriever(Protocol):
    async def retrieve(self, options: RetrievalOptions, query: str) -> list[Hit]: ...


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(
            part.get("text", "") for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )  # fmt: skip
    return ""


def query_of(messages: list[ChatMessage]) -> str:
    """The last user message's text: what the sources should answer."""
    for message in reversed(messages):
        if message.role == "user" and (text := _text(message.content).strip()):
            return text
    raise InvalidRequest("retrieval needs a user message with text", param="messages")


def ground(messages: list[ChatMessage], hits: list[Hit]) -> list[ChatMessage]:
    """The messages with a numbered-sources system message after the client's own system ones.

    The client's system prompt stays first (and keeps its meaning); the sources come right
    after it, before the conversation.
    """
    if not hits:
        return messages
    lines = [SOURCES_HEADER]
    for number, hit in enumerate(hits, start=1):
        origin = f" ({hit.source})" if hit.source else ""
        lines.append(f"[{number}]{origin} {hit.text}")
    sources = ChatMessage(role="system", content="\n".join(lines))
    lead = 0
    while lead < len(messages) and messages[lead].role in ("system", "developer"):
        lead += 1
    return [*messages[:lead], sources, *messages[lead:]]


def citations(hits: list[Hit]) -> list[dict[str, Any]]:
    return [
        Citation(index=n, doc_id=h.doc_id, chunk_id=h.chunk_id, score=round(h.score, 4),
                 source=h.source).model_dump()
        for n, h in enumerate(hits, start=1)
    ]  # fmt: skip


def attach_citations(content: bytes, cited: list[dict[str, Any]]) -> bytes:
    body = json.loads(content)
    body["citations"] = cited
    return json.dumps(body).encode()
