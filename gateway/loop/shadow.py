"""Shadow traffic: while a challenger waits for its verdict, mirror a share of its alias's
sampled requests to it, off the request path, and score the answers with the alias's rubric.

Mirrors are internal requests (never returned, never billed to the caller, never in client
metrics); they are counted under their own metric labels, failures included. At most
``max_in_flight`` mirrors run at once; past it a mirror is skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.gate import GateConfig, GateVerdict
from eval.sampling import fraction
from gateway.observers import FinishedRequest

logger = logging.getLogger("tuneloop.loop")

# (alias, challenger served name, the client's messages) -> the challenger's score (None: n/a)
MirrorScore = Callable[[str, str, list[dict]], Awaitable[float | None]]
Count = Callable[[str, str], None]  # (alias, result: scored | failed | skipped)


@dataclass
class _Shadow:
    challenger: str
    share: float
    scores: list[float] = field(default_factory=list)
    failures: int = 0


class ShadowMirror:
    """An observer; ``watch(alias, challenger, share)`` starts mirroring, ``stop`` ends it."""

    def __init__(self, mirror: MirrorScore, *, count: Count, max_in_flight: int = 4) -> None:
        self._mirror = mirror
        self._count = count
        self._shadows: dict[str, _Shadow] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, alias: str, challenger: str, *, share: float) -> None:
        self._shadows[alias] = _Shadow(challenger, share)

    def stop(self, alias: str) -> tuple[list[float], int]:
        """Stop mirroring ``alias``; its shadow scores and failure count."""
        shadow = self._shadows.pop(alias, None)
        return (shadow.scores, shadow.failures) if shadow else ([], 0)

    def __call__(self, done: FinishedRequest) -> None:
        shadow = self._shadows.get(done.ctx.model)
        capture = done.capture
        if shadow is None or capture is None or done.ctx.status != 200:
            return
        messages = capture.request.get("messages")
        if not messages or fraction(b"shadow", done.ctx.request_id) >= shadow.share:
            return
        if self._slots.locked():
            self._count(done.ctx.model, "skipped")
            return
        task = asyncio.create_task(self._run(done.ctx.model, shadow, messages))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, alias: str, shadow: _Shadow, messages: list[dict]) -> None:
        async with self._slots:
            try:
                score = await self._mirror(alias, shadow.challenger, messages)
            except Exception as exc:  # counted and logged, never hidden, never raised
                shadow.failures += 1
                self._count(alias, "failed")
                logger.warning("event=shadow_failed alias=%s challenger=%s error=%r",
                               alias, shadow.challenger, exc)  # fmt: skip
                return
        if score is not None:
            shadow.scores.append(score)
        self._count(alias, "scored")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def with_shadow(
    verdict: GateVerdict, shadow: list[float], live: list[float], config: GateConfig,
    failures: int,
) -> GateVerdict:  # fmt: skip
    """The frozen-set verdict with the shadow figures on it (also on a rejection: they show
    what live traffic said), refused when the shadow mean falls below the champion's live mean
    (by more than the shadow tolerance)."""
    shadow_mean, live_mean = statistics.fmean(shadow), statistics.fmean(live)
    update: dict[str, Any] = {
        "shadow_mean": shadow_mean, "champion_live_mean": live_mean,
        "shadow_samples": len(shadow), "shadow_failures": failures,
    }  # fmt: skip
    if verdict.promote and shadow_mean < live_mean - config.shadow_tolerance:
        update["promote"] = False
        update["reason"] = (
            f"reject: shadow mean {shadow_mean:.3f} over {len(shadow)} mirrored requests "
            f"({failures} failed) below the champion's live mean {live_mean:.3f}"
        )
    return verdict.model_copy(update=update)
