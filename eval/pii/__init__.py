"""PII scrubbing before anything is stored or sent to a judge.

``Scrubber(ScrubberConfig(...)).scrub(text)`` replaces emails, phone numbers, payment cards,
IBANs, US SSNs, IP addresses and secrets with typed placeholders (``<EMAIL>``) or, given an
HMAC key, with stable pseudonyms (``<EMAIL:3fa9c1>``).
"""

from eval.pii.findings import KINDS, Finding, resolve_overlaps
from eval.pii.scrubber import DEFAULT_PHONE_REGIONS, Scrubber, ScrubberConfig, pseudonym

__all__ = [
    "DEFAULT_PHONE_REGIONS",
    "KINDS",
    "Finding",
    "Scrubber",
    "ScrubberConfig",
    "pseudonym",
    "resolve_overlaps",
]
