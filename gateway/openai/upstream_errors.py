"""What a client gets when the model server answers with an error status.

vLLM's own errors are already OpenAI-shaped (``{"error": {"message", "type", ...}}``) and pass
through untouched. Anything else is rewrapped in that shape, keeping the server's words in the
message, so the openai SDK raises an ``APIStatusError`` with a readable message instead of a
client that tries to parse HTML: a proxy's or load balancer's error page in front of a replica
(``502 Bad Gateway``), a plain-text ``Internal Server Error`` from a crashed worker, or the
older vLLM shape with the fields at the top level (``{"object": "error", "message": ...}``).
The status is kept either way: it is what the SDK's retries and the client's handling key on.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.protocol import ErrorInfo, ErrorResponse

QUOTED_CHARS = 300
"""At most this much of a non-JSON error body is quoted in the message."""

__all__ = ["QUOTED_CHARS", "upstream_error_body"]


def upstream_error_body(status: int, content: bytes) -> bytes:
    """``content`` (the model server's body for ``status``) as an OpenAI error body."""
    try:
        parsed: Any = json.loads(content)
    except ValueError:  # also UnicodeDecodeError
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return content  # OpenAI-shaped already (vLLM's ErrorResponse)
        if isinstance(parsed.get("message"), str):  # the older top-level shape
            return _body(status, parsed["message"], parsed.get("type"), parsed.get("param"))
    text = " ".join(content.decode("utf-8", "replace").split())  # one line
    if len(text) > QUOTED_CHARS:
        text = text[:QUOTED_CHARS] + "…"
    message = f"the model server answered {status}" + (f": {text}" if text else " with no body")
    return _body(status, message, None, None)


def _body(status: int, message: str, error_type: object, param: object) -> bytes:
    if not isinstance(error_type, str) or not error_type:
        error_type = "invalid_request_error" if 400 <= status < 500 else "upstream_error"
    error = ErrorInfo(
        message=message,
        type=error_type,
        param=param if isinstance(param, str) else None,
    )
    return ErrorResponse(error=error).model_dump_json().encode()
