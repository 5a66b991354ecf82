"""The llm_judge token budget: so many tokens per clock hour, then no judging until it turns."""

from __future__ import annotations

import time
from collections.abc import Callable


class HourlyBudget:
    def __init__(self, tokens_per_hour: int, *, clock: Callable[[], float] = time.time) -> None:
        self._limit = tokens_per_hour
        self._clock = clock
        self._hour = -1
        self._spent = 0

    def _roll(self) -> None:
        hour = int(self._clock() // 3600)
        if hour != self._hour:
            self._hour, self._spent = hour, 0

    def available(self) -> bool:
        self._roll()
        return self._spent < self._limit

    def spend(self, tokens: int) -> None:
        self._roll()
        self._spent += tokens

    @property
    def spent(self) -> int:
        self._roll()
        return self._spent
