"""What a detector reports, and how overlapping reports are settled into one clean set."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

EMAIL = "email"
PHONE = "phone"
CARD = "card"
IBAN = "iban"
SSN = "ssn"
IP = "ip"
SECRET = "secret"

# Every kind, most specific first: on two findings of the same length the earlier kind wins.
KINDS: tuple[str, ...] = (SECRET, EMAIL, IBAN, CARD, SSN, IP, PHONE)
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII: its kind and where it sits in the text (``text[start:end] == value``).

    ``canonical`` is the value in a normal form (an email lowercased, a phone number in E.164,
    a card or IBAN without spaces) so that one value written two ways gets one pseudonym. The
    value itself is kept out of ``repr`` so that logging a finding does not log the PII.
    """

    kind: str
    start: int
    end: int
    value: str = field(repr=False)
    canonical: str = field(default="", repr=False, compare=False)

    @property
    def normalised(self) -> str:
        """The form pseudonyms are computed from: ``canonical`` when set, else ``value``."""
        return self.canonical or self.value


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep a non-overlapping subset, sorted by start.

    The longest finding wins an overlap; on equal length the more specific kind (earlier in
    ``KINDS``) wins, then the earlier start. A finding is either kept whole or dropped, so the
    replacement never cuts into a value another placeholder already covers.
    """
    ordered = sorted(
        (f for f in findings if f.end > f.start),
        key=lambda f: (f.start - f.end, _RANK.get(f.kind, len(KINDS)), f.start),
    )
    starts: list[int] = []
    kept: list[Finding] = []
    for finding in ordered:
        index = bisect_right(starts, finding.start)
        if index > 0 and kept[index - 1].end > finding.start:
            continue
        if index < len(kept) and kept[index].start < finding.end:
            continue
        starts.insert(index, finding.start)
        kept.insert(index, finding)
    return kept
