"""The llm_judge's model call, through the gateway's own internal completion path.

The request is marked internal: it is routed like any other (aliases, adapters, replicas) but
never sampled, never counted in client metrics and never logged as a client's request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from eval.rubrics import JudgeCall, JudgeReply, parse_judge_reply
from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.openai.serving import JSONResult, OpenAIServing


class JudgeFailed(RuntimeError):
    """The judge model did not answer with a usable reply."""


class InternalJudge:
    """An ``eval.rubrics.Judge``: ``await judge(call)`` asks a served model for a score."""

    def __init__(
        self,
        serving: Callable[[], OpenAIServing],
        *,
        default_model: Callable[[], str],
        metrics: GatewayMetrics,
        spend: Callable[[str, int], None],
    ) -> None:
        self._serving = serving  # a getter: the serving object is built after the judge
        self._default_model = default_model
        self._metrics = metrics
        self._spend = spend

    async def __call__(self, call: JudgeCall) -> JudgeReply:
        model = call.model or self._default_model()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": call.prompt}],
            "max_tokens": call.max_tokens,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "schema": call.schema},
            },
            "json_validation": "report",
        }
        ctx = RequestContext(request_id=f"judge-{uuid.uuid4().hex}", internal=True)
        started = time.perf_counter()
        try:
            result = await self._serving().create_chat_completion(json.dumps(body).encode(), ctx)
        finally:
            self._metrics.eval.judge_seconds.observe(time.perf_counter() - started)
            tokens = (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)
            if tokens:
                self._spend(model, tokens)
        if not isinstance(result, JSONResult) or result.status != 200:
            status = getattr(result, "status", "stream")
            raise JudgeFailed(f"judge model {model} answered {status}")
        choices = json.loads(result.body).get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        return parse_judge_reply(text, tokens=tokens)
