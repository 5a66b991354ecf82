"""The llm_judge's model call, through the gateway's own internal completion path."""

from __future__ import annotations

import time
from collections.abc import Callable

from eval.rubrics import JudgeCall, JudgeReply, parse_judge_reply
from gateway.internal import internal_chat
from gateway.metrics import GatewayMetrics
from gateway.openai.serving import OpenAIServing


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
        started = time.perf_counter()
        try:
            answer = await internal_chat(self._serving(), body, purpose="judge")
        finally:
            self._metrics.eval.judge_seconds.observe(time.perf_counter() - started)
        if answer.tokens:
            self._spend(model, answer.tokens)
        return parse_judge_reply(answer.text, tokens=answer.tokens)
