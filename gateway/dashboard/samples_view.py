"""How a stored sample and an event read on the dashboard: message text, one-line previews,
indented JSON answers and short key/value pairs (plain text; the templates escape it)."""

from __future__ import annotations

import json
from typing import Any


def content_text(content: Any) -> str:
    """The text of a chat message's ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type", "part") if isinstance(part, dict) else "part"
                parts.append(f"[{kind}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def split_request(request: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(role, text) for each message (or the prompt), and the remaining request fields."""
    extra = {k: v for k, v in request.items() if k not in ("messages", "prompt")}
    messages = request.get("messages")
    if isinstance(messages, list):
        pairs = []
        for message in messages:
            if isinstance(message, dict):
                pairs.append((str(message.get("role", "?")), content_text(message.get("content"))))
        return pairs, extra
    prompt = request.get("prompt")
    if prompt is not None:
        texts = prompt if isinstance(prompt, list) else [prompt]
        return [("prompt", content_text(text)) for text in texts], extra
    return [], extra


def request_preview(request: dict[str, Any], *, limit: int = 90) -> str:
    """The last user message (or the prompt), on one line, cut to ``limit`` characters."""
    messages, _ = split_request(request)
    users = [text for role, text in messages if role in ("user", "prompt")] or [
        text for _, text in messages
    ]
    text = " ".join(users[-1].split()) if users else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty_json(text: str | None) -> str | None:
    """``text`` indented when it is a JSON object or array (structured answers), else as is."""
    if text is None or not text.lstrip().startswith(("{", "[")):
        return text
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def detail_pairs(detail: dict[str, Any], *, limit: int = 160) -> list[tuple[str, str]]:
    """An event's or feedback's fields as (key, short text) pairs."""
    pairs = []
    for key, value in detail.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        pairs.append((str(key), text if len(text) <= limit else text[: limit - 1] + "…"))
    return pairs
