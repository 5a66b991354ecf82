"""A minimal OpenAI-shaped upstream, for what a real vLLM server cannot do.

- ``bench/overhead.py`` uses it as an upstream that answers at once, to measure the gateway's
  own added latency.
- The fault tests use ``--die-after N``: the process exits (``os._exit``) after sending N
  stream chunks, a replica dying mid-stream; and ``--error-status S``: every generation is
  answered ``S`` with an HTML page, as a proxy in front of a sick replica answers.

Run: ``python tests/stub_upstream.py --port 9000 [--model NAME] [--die-after N]
[--error-status S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


ERROR_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad Gateway</h1></body></html>\n"
)


def build_app(
    model: str, die_after: int | None, error_status: int | None = None
) -> Callable[..., Awaitable[None]]:
    models = json.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "stub"}]}
    ).encode()
    completion = json.dumps(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "stub"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    ).encode()

    def chunk(text: str) -> bytes:
        body = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/health":
            await respond(send, 200, b"", b"text/plain")
            return
        if path == "/v1/models":
            await respond(send, 200, models, b"application/json")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if error_status is not None:
            await respond(send, error_status, ERROR_PAGE, b"text/html")
            return
        request = json.loads(body or b"{}")
        if not request.get("stream"):
            await respond(send, 200, completion, b"application/json")
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for index in range(4):
            if die_after is not None and index >= die_after:
                os._exit(1)  # the replica dies mid-stream
            await send(
                {"type": "http.response.body", "body": chunk(f"part{index} "), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--die-after",
        type=int,
        default=None,
        help="exit the process after sending this many stream chunks",
    )
    parser.add_argument(
        "--error-status",
        type=int,
        default=None,
        help="answer every generation with this status and an HTML error page",
    )
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        build_app(args.model, args.die_after, args.error_status),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
