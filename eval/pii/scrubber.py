"""The scrubber: runs the enabled detectors, settles overlaps, writes placeholders.

Scrubbing happens before anything is stored or sent to a judge. A value becomes ``<EMAIL>``,
or, with an HMAC key, ``<EMAIL:3fa9c1>``: the first six hex digits of
HMAC-SHA256(key, normalised value), so the same address links across samples while neither
the address nor an unkeyed hash of it is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eval.pii.credentials import SecretDetector
from eval.pii.detectors import CardDetector, EmailDetector, IbanDetector, IpDetector, SsnDetector
from eval.pii.findings import (
    CARD,
    EMAIL,
    IBAN,
    IP,
    KINDS,
    PHONE,
    SECRET,
    SSN,
    Finding,
    resolve_overlaps,
)
from eval.pii.phones import PhoneDetector

logger = logging.getLogger("tuneloop.eval.pii")

DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")
MIN_HMAC_KEY_BYTES = 16
PSEUDONYM_HEX = 6


class ScrubberConfig(BaseModel):
    """Which PII to look for, and how to replace it."""

    model_config = ConfigDict(frozen=True)

    phone_regions: tuple[str, ...] = Field(
        default=DEFAULT_PHONE_REGIONS,
        description=(
            "ISO 3166 regions whose national phone formats are recognised, in order of "
            "preference. Numbers in international form (+CC ...) are found whatever this holds."
        ),
    )
    hmac_key: bytes | None = Field(
        default=None,
        repr=False,
        exclude=True,
        description=(
            "When set (at least 16 bytes), values become stable pseudonyms such as "
            "<EMAIL:3fa9c1> instead of bare <EMAIL>. Kept out of repr and of model_dump."
        ),
    )
    kinds: frozenset[str] = Field(
        default=frozenset(KINDS),
        description=f"Detectors that are on; any of: {', '.join(KINDS)}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                logger.warning("event=pii_config_unknown_keys keys=%s", ",".join(unknown))
                data = {k: v for k, v in data.items() if k not in unknown}
        return data

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        regions = tuple(dict.fromkeys(r.strip().upper() for r in regions))
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions: {', '.join(unknown)}")
        return regions

    @field_validator("hmac_key")
    @classmethod
    def _key(cls, key: bytes | None) -> bytes | None:
        if key is not None and len(key) < MIN_HMAC_KEY_BYTES:
            raise ValueError(f"hmac_key must be at least {MIN_HMAC_KEY_BYTES} bytes")
        return key

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: frozenset[str]) -> frozenset[str]:
        unknown = sorted(kinds - set(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kinds: {', '.join(unknown)}; known: {', '.join(KINDS)}")
        return kinds


class Detector(Protocol):
    """Anything that reports findings of one kind in a text."""

    kind: str

    def find(self, text: str) -> Iterable[Finding]: ...


class Scrubber:
    """Finds and replaces PII in text and in JSON-like values.

    Thread-safe: every pattern is compiled here and nothing is written after ``__init__``.
    """

    def __init__(self, config: ScrubberConfig | None = None) -> None:
        self.config = config or ScrubberConfig()
        available: dict[str, Detector] = {
            SECRET: SecretDetector(),
            EMAIL: EmailDetector(),
            IBAN: IbanDetector(),
            CARD: CardDetector(),
            SSN: SsnDetector(),
            IP: IpDetector(),
        }
        if PHONE in self.config.kinds:
            available[PHONE] = PhoneDetector(self.config.phone_regions)
        self._detectors = tuple(d for kind, d in available.items() if kind in self.config.kinds)
        self._key = self.config.hmac_key

    def findings(self, text: str) -> list[Finding]:
        """Every PII finding in ``text``, sorted by start and never overlapping."""
        if not text:
            return []
        found: list[Finding] = []
        for detector in self._detectors:
            found.extend(detector.find(text))
        return resolve_overlaps(found)

    def scrub(self, text: str) -> str:
        """``text`` with each finding replaced by its placeholder or pseudonym."""
        findings = self.findings(text)
        if not findings:
            return text
        parts: list[str] = []
        position = 0
        for finding in findings:
            parts.append(text[position : finding.start])
            parts.append(self.placeholder(finding))
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)

    def scrub_value(self, value: Any) -> Any:
        """Scrub every string inside dicts, lists and tuples; keys and non-strings stay as is."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {key: self.scrub_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub_value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.scrub_value(item) for item in value)
        return value

    def placeholder(self, finding: Finding) -> str:
        """``<KIND>``, or ``<KIND:hhhhhh>`` when the config has an HMAC key."""
        tag = finding.kind.upper()
        if self._key is None:
            return f"<{tag}>"
        return f"<{tag}:{pseudonym(self._key, finding.normalised)}>"


def pseudonym(key: bytes, normalised: str) -> str:
    """The first hex digits of HMAC-SHA256(key, normalised value)."""
    digest = hmac.new(key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX]
