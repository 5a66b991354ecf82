"""The non-streaming JSON promise: send, validate every choice, repair and resend, or refuse.

A retry gives the model twice the room (``max_tokens``) and, for chat, shows it its rejected
answer with the validation errors quoted. A schema the grammar backend refuses (vLLM answers
400 to the guided request) is retried unguided: validation still holds the line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.context import RequestContext
from gateway.openai.json_guard import (
    JsonSpec,
    JsonValidationFailed,
    repair_instruction,
    violations,
)
from gateway.openai.protocol import ChatCompletionRequest, ChatMessage, GenerationRequest

logger = logging.getLogger("tuneloop.json")

MAX_TOKENS_CAP = 4096
# (request, guided) -> (status, body bytes) of one upstream attempt
Send = Callable[[GenerationRequest, bool], Awaitable[tuple[int, bytes]]]


def choice_text(choice: dict[str, Any]) -> str | None:
    message = choice.get("message")
    if isinstance(message, dict):
        return message.get("content")
    return choice.get("text")


def check_choices(spec: JsonSpec, body: dict[str, Any]) -> list[str]:
    """Violations over every choice, each prefixed with its index when there are several."""
    choices = body.get("choices") or []
    found: list[str] = []
    for choice in choices:
        errors = violations(
            spec, choice_text(choice), truncated=choice.get("finish_reason") == "length"
        )
        prefix = f"choice {choice.get('index', 0)}: " if len(choices) > 1 else ""
        found += [prefix + error for error in errors]
    return found if choices else ["the response has no choices"]


def repaired(request: GenerationRequest, body: dict[str, Any], spec: JsonSpec, errors: list[str]):
    """The next attempt: more room, and for chat the rejected answer with what was wrong."""
    room = request.max_completion_tokens if isinstance(request, ChatCompletionRequest) else None
    room = room or request.max_tokens
    update: dict[str, Any] = {}
    if room:
        update["max_tokens"] = min(room * 2, MAX_TOKENS_CAP)
        if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens:
            update["max_completion_tokens"] = update["max_tokens"]
    if isinstance(request, ChatCompletionRequest):
        rejected = choice_text((body.get("choices") or [{}])[0]) or ""
        update["messages"] = [
            *request.messages,
            ChatMessage(role="assistant", content=rejected),
            ChatMessage(role="user", content=repair_instruction(spec, errors)),
        ]
    return request.model_copy(update=update)


async def complete_json(
    send: Send,
    request: GenerationRequest,
    spec: JsonSpec,
    ctx: RequestContext,
    *,
    max_retries: int,
) -> tuple[int, bytes]:
    """Answer ``request`` with output that satisfies ``spec``, or raise 422 (strict mode)."""
    guided = True
    attempt = 0
    while True:
        attempt += 1
        status, content = await send(request, guided)
        if status == 400 and guided and spec.kind == "json_schema":
            logger.warning(
                "request_id=%s event=grammar_refused detail=%r: retrying unguided",
                ctx.request_id, content[:300],
            )  # fmt: skip
            guided = False
            status, content = await send(request, guided)
        if status != 200:
            return status, content
        body = json.loads(content)
        errors = check_choices(spec, body)
        if not errors or attempt > max_retries:
            break
        ctx.json_repairs += 1
        logger.info(
            "request_id=%s event=json_repair attempt=%d errors=%r", ctx.request_id, attempt, errors
        )
        request = repaired(request, body, spec, errors)

    ctx.json_result = "failed" if errors else ("repaired" if attempt > 1 else "valid")
    if errors and request.json_validation == "strict":
        raise JsonValidationFailed(
            f"The model's output failed JSON validation after {attempt} attempt(s): "
            + "; ".join(errors)
        )
    body["tuneloop_validation"] = {"valid": not errors, "attempts": attempt, "errors": errors}
    return status, json.dumps(body).encode()
