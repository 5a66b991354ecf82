"""The gateway's own internal completion path: judge calls, gate generations, shadow requests.

An internal request is routed like any other (aliases, adapters, replicas, JSON guard) but is
marked on its context: never sampled, never counted in client metrics, never in the access log.

Internal work never crowds out clients (``gateway.admission.InternalLane``, applied by
``OpenAIServing`` to every request marked internal).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.context import RequestContext
from gateway.openai.serving import JSONResult, OpenAIServing


class InternalCallFailed(RuntimeError):
    """The model did not answer an internal request with a usable completion."""


@dataclass(frozen=True, slots=True)
class InternalAnswer:
    text: str
    tokens: int  # prompt + completion


async def internal_chat(
    serving: OpenAIServing, body: dict[str, Any], *, purpose: str
) -> InternalAnswer:
    """One buffered chat completion through ``serving``; ``purpose`` prefixes the request id."""
    ctx = RequestContext(request_id=f"{purpose}-{uuid.uuid4().hex}", internal=True)
    result = await serving.create_chat_completion(
        json.dumps({**body, "stream": False}).encode(), ctx
    )
    tokens = (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)
    if not isinstance(result, JSONResult) or result.status != 200:
        status = getattr(result, "status", "stream")
        raise InternalCallFailed(f"{body.get('model')} answered {status} to a {purpose} request")
    choices = json.loads(result.body).get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    return InternalAnswer(text, tokens)
