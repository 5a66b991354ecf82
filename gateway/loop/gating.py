"""The gate: champion and challenger on the alias's frozen set, with shadow traffic meanwhile.

Both answer every frozen input through the real engine (internal requests, yielding to
clients), each answer is scored with the alias's rubric, and ``adapters.gate.run_gate`` decides
(paired bootstrap, check by check). While it runs, a share of the alias's sampled requests is
mirrored to the challenger; the shadow figures go on the verdict and may refuse it
(``with_shadow``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.dataset_registry import DatasetRegistry
from adapters.gate import GateVerdict, Scored, run_gate
from gateway.evaluation.service import EvalService
from gateway.exceptions import InvalidRequest
from gateway.internal import internal_chat
from gateway.loop.shadow import ShadowMirror, with_shadow
from gateway.openai.serving import OpenAIServing

if TYPE_CHECKING:
    from gateway.loop.service import LoopConfig

Conversation = list[dict[str, str]]


class Gating:
    def __init__(
        self,
        datasets: DatasetRegistry,
        evaluation: EvalService,
        shadow: ShadowMirror,
        serving: Callable[[], OpenAIServing],
        *,
        config: LoopConfig,
    ) -> None:
        self.datasets = datasets
        self._eval = evaluation
        self._shadow = shadow
        self._serving = serving
        self.config = config

    async def run(self, alias: str, champion: str, challenger: str) -> GateVerdict:
        """Frozen-set comparison, with shadow traffic mirrored meanwhile."""
        frozen = await asyncio.to_thread(self.datasets.frozen, alias)
        active = self._eval.active_rubrics().get(alias)
        if active is None:
            raise InvalidRequest(f"alias '{alias}' has no rubric to gate with", param="alias")
        epoch = active.record.epoch
        after = await asyncio.to_thread(self._eval.store.last_score_id)
        self._shadow.watch(alias, challenger, share=self.config.shadow_share)
        try:
            verdict = await run_gate(
                frozen, champion=champion, challenger=challenger, generate=self._generate,
                score=lambda conversation, answer: self._score(alias, conversation, answer),
                config=self.config.gate,
            )  # fmt: skip
        finally:
            shadow_scores, failures = self._shadow.stop(alias)
        if not shadow_scores:
            return verdict
        live = await asyncio.to_thread(
            self._eval.store.version_scores, alias, champion, epoch=epoch, after_id=after
        )
        if not live:
            return verdict
        return with_shadow(verdict, shadow_scores, live, self.config.gate, failures)

    async def _generate(self, model: str, messages: Conversation) -> str:
        body = {"model": model, "messages": messages, "temperature": 0,
                "max_tokens": self.config.generate_max_tokens}  # fmt: skip
        return (await internal_chat(self._serving(), body, purpose="gate")).text

    async def _score(self, alias: str, conversation: Conversation, answer: str) -> Scored:
        result = await self._eval.score_answer(
            alias, sample_id=f"gate-{hash(answer)}", messages=conversation[:-1], answer=answer,
            reference=conversation[-1]["content"],
        )  # fmt: skip
        if result is None:
            return Scored(total=None, checks={})
        return Scored(total=result.total, checks={c.name: c.passed for c in result.checks})


__all__ = ["Gating"]
