"""The sampling decision: deterministic, nested, and cheap.

``fraction(salt, request_id)`` maps ``sha256(salt || request_id)`` to [0, 1); a request is
sampled when its fraction is below the rate. The same request id always gets the same answer,
and the decision is nested: a request in the 5% sample is also in the 10% one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

_SCALE = float(1 << 64)


def fraction(salt: bytes, request_id: str) -> float:
    """A uniform number in [0, 1) fixed by ``salt`` and ``request_id``."""
    digest = hashlib.sha256(salt + request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    """A rate per alias (or model), ``default_rate`` for the rest; 0 turns sampling off."""

    default_rate: float = 0.05
    rates: Mapping[str, float] = field(default_factory=dict)
    salt: bytes = b"tuneloop"

    def __post_init__(self) -> None:
        for name, rate in {"default": self.default_rate, **self.rates}.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"sample rate for {name} must be within 0..1, got {rate}")

    def rate(self, alias: str) -> float:
        return self.rates.get(alias, self.default_rate)

    def decide(self, alias: str, request_id: str) -> bool:
        rate = self.rate(alias)
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        return fraction(self.salt, request_id) < rate


__all__ = ["SamplingPolicy", "fraction"]
