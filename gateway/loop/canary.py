"""The canary: a share of an alias's live traffic on the challenger, and the decision after.

The alias is split (champion ``100 - share``, challenger ``share``) until the challenger has
``samples`` live scores under the alias's rubric epoch or ``timeout`` passes. It holds when it
has its samples and its mean is not below the champion's mean over the same window by more than
``tolerance``; then the alias goes to the challenger alone, otherwise back to the champion.
``on_count`` hears how many samples the challenger has so far (the job's ``detail.canary``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eval.store import EvalStore

Retarget = Callable[[str, dict[str, int]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    alias: str
    champion: str
    challenger: str
    epoch: int
    share: int
    samples: int
    timeout: float
    tolerance: float


async def run_canary(
    plan: CanaryPlan,
    *,
    store: EvalStore,
    retarget: Retarget,
    on_count: Callable[[int], Awaitable[None]],
    poll: float = 1.0,
) -> tuple[bool, dict[str, Any]]:
    """Split the alias, wait for the challenger's live scores, decide; (holds, the numbers).

    Cancelled (an operator's cancel, the gateway stopping), the alias goes back to the champion
    before the cancellation goes on."""
    await retarget(plan.alias, {plan.champion: 100 - plan.share, plan.challenger: plan.share})
    try:
        after = await asyncio.to_thread(store.last_score_id)
        deadline = time.monotonic() + plan.timeout
        canary: list[float] = []
        seen = -1
        while time.monotonic() < deadline:
            canary = await asyncio.to_thread(
                store.version_scores, plan.alias, plan.challenger, epoch=plan.epoch,
                after_id=after,
            )  # fmt: skip
            if len(canary) != seen:
                seen = len(canary)
                await on_count(seen)
            if len(canary) >= plan.samples:
                break
            await asyncio.sleep(poll)
        base = await asyncio.to_thread(
            store.version_scores, plan.alias, plan.champion, epoch=plan.epoch, after_id=after
        )
    except asyncio.CancelledError:
        await asyncio.shield(retarget(plan.alias, {plan.champion: 100}))
        raise
    numbers = {
        "canary_samples": len(canary),
        "canary_mean": statistics.fmean(canary) if canary else None,
        "champion_mean": statistics.fmean(base) if base else None,
    }
    floor = (
        numbers["champion_mean"] - plan.tolerance if numbers["champion_mean"] is not None else None
    )
    holds = len(canary) >= plan.samples and (floor is None or numbers["canary_mean"] >= floor)
    await retarget(plan.alias, {plan.challenger: 100} if holds else {plan.champion: 100})
    return holds, numbers


__all__ = ["CanaryPlan", "run_canary"]
