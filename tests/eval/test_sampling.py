"""The sampling decision: deterministic per request id, nested across rates, near the rate."""

from __future__ import annotations

import pytest

from eval.sampling import SamplingPolicy, fraction

IDS = [f"req-{n}" for n in range(20000)]


def test_decision_is_deterministic_and_nested() -> None:
    small = SamplingPolicy(default_rate=0.05)
    large = SamplingPolicy(default_rate=0.10)
    in_small = {rid for rid in IDS if small.decide("a", rid)}
    in_large = {rid for rid in IDS if large.decide("a", rid)}
    assert in_small <= in_large  # a request in the 5% sample is in the 10% one
    assert in_small == {rid for rid in IDS if small.decide("a", rid)}
    assert 0.04 < len(in_small) / len(IDS) < 0.06
    assert 0.09 < len(in_large) / len(IDS) < 0.11


def test_per_alias_rates_and_the_extremes() -> None:
    policy = SamplingPolicy(default_rate=0.0, rates={"extract": 1.0, "chat": 0.5})
    assert all(policy.decide("extract", rid) for rid in IDS[:500])
    assert not any(policy.decide("other", rid) for rid in IDS[:500])
    share = sum(policy.decide("chat", rid) for rid in IDS) / len(IDS)
    assert 0.47 < share < 0.53


def test_salt_changes_the_sample_and_bad_rates_are_refused() -> None:
    assert fraction(b"a", "req-1") != fraction(b"b", "req-1")
    assert 0 <= fraction(b"a", "req-1") < 1
    with pytest.raises(ValueError, match="within 0..1"):
        SamplingPolicy(default_rate=1.5)
    with pytest.raises(ValueError, match="chat"):
        SamplingPolicy(rates={"chat": -0.1})
