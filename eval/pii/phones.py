"""Phone numbers, found and validated by ``phonenumbers`` (libphonenumber) for chosen regions.

``PhoneNumberMatcher`` is thorough but costs about a millisecond per region and per run of
digits, and on its own it gives up on a number followed by more digits ("(415) 555-2671
24/7"). So it never reads the whole text; it confirms spans that cheap tests propose:

1. Dates (``2024-11-29``, ``29/11/2024``, ``29.11.2024``) are blanked out of a same-length copy
   of the text, so lists of dates never look like phone numbers.
2. A regex finds chains of digit groups joined the way phone numbers join them (one space,
   dash, dot or slash; brackets), not glued to a word before (``ORD-2024-001234``).
3. Spans are proposed inside each chain, in order. A chain written internationally
   (``+44 ...``, or ``0049 ...`` with a region's international prefix) gives spans from its
   start. Elsewhere, a span is a run of whole groups, starting at the chain's start or after
   a space, whose digits could be a national number of a region: they start with the
   region's trunk prefix (``0`` in GB, DE, FR; an optional ``1`` in NANP regions such as US)
   and the rest matches the region's national number pattern from the metadata. Only a
   trunk prefix may stand alone as a one-digit group.
4. The matcher reads each span for its region, with two characters of context either side
   (digits there shown as spaces), at leniency ``STRICT_GROUPING``: the digits must be grouped
   the way the region writes its numbers, which keeps order numbers and timestamps out. Spans
   that start inside an accepted number are skipped; after eight misses in a row the rest of
   the chain is skipped, which bounds the work a wall of digits can cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency, PhoneMetadata, PhoneNumberFormat, PhoneNumberMatcher

from eval.pii.findings import PHONE, Finding

_SEPARATOR = r"[ \t.\-/\u00a0\u2010-\u2015]"
# First character, then the look-behinds (faster than look-behinds first), then the groups.
_CHAIN = (
    r"[(+\d](?<!\w[(+\d])(?<!\w[\-/.][(+\d])[(+]{0,2}\d*"
    rf"(?:(?:{_SEPARATOR}\(?|\){_SEPARATOR}?|\)?\()\d+)*\)?"
)
_DATE = (
    r"\d(?<![\d.\-/]\d)(?:\d{3}-\d{1,2}-\d{1,2}|\d?([./\-])\d{1,2}\1(?:\d{4}|\d{2}))"
    r"(?![\d.\-/]?\d)"
)
_INTERNATIONAL = r"\(?\+\(?\d"
_GROUP = r"\d+"
_MIN_DIGITS = 7
_MAX_DIGITS = 17
_CONTEXT = 2
_MAX_TRIES = 4  # the matcher's own limit on candidates per read
_MAX_MISSES = 8  # reads in a row that find nothing before a chain is given up
_NANP_COUNTRY_CODE = 1
_ANY_REGION = "ZZ"  # libphonenumber's "unknown region": reads international numbers only


@dataclass(frozen=True, slots=True)
class _Region:
    """What a national number of one region looks like, from libphonenumber's metadata."""

    code: str
    trunk: str  # national (trunk) prefix, "" when the region has none
    trunk_optional: bool  # NANP: the "1" may be written or not
    national_lengths: tuple[int, ...]  # possible lengths of a national number, longest first
    national: re.Pattern[str]  # matches every valid national significant number
    international: re.Pattern[str]  # the prefix dialled before a country code ("00", "011")

    def lengths(self, digits: str, first: int) -> Iterator[int]:
        """Lengths of the runs of ``digits`` from ``first`` that read as a national number."""
        written_trunk = bool(self.trunk) and digits.startswith(self.trunk, first)
        if self.trunk and not written_trunk and not self.trunk_optional:
            return
        skip = len(self.trunk) if written_trunk else 0
        for length in self.national_lengths:
            national = digits[first + skip : first + skip + length]
            if len(national) == length and self.national.fullmatch(national):
                yield skip + length
            if written_trunk and self.trunk_optional:
                national = digits[first : first + length]
                if len(national) == length and self.national.fullmatch(national):
                    yield length


class PhoneDetector:
    """Phone numbers valid in one of ``regions`` (ISO 3166 codes), or in international form."""

    kind = PHONE

    def __init__(self, regions: tuple[str, ...]) -> None:
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions: {', '.join(unknown)}")
        self._regions = tuple(_region(code) for code in regions)
        self._chain = re.compile(_CHAIN)
        self._international = re.compile(_INTERNATIONAL)
        self._date = re.compile(_DATE)
        self._group = re.compile(_GROUP)

    def find(self, text: str) -> Iterator[Finding]:
        masked = self._date.sub(lambda m: "#" * len(m.group()), text)
        for chain in self._chain.finditer(masked):
            if chain.end() - chain.start() < _MIN_DIGITS:
                continue
            taken_until, misses = 0, 0
            for start, end, region in self._proposals(chain.group()):
                if start < taken_until:
                    continue
                if misses >= _MAX_MISSES:
                    break
                hits = list(_read(masked, chain.start() + start, chain.start() + end, region))
                misses = 0 if hits else misses + 1
                for hit_start, hit_end, e164 in hits:
                    taken_until = max(taken_until, hit_end - chain.start())
                    yield Finding(PHONE, hit_start, hit_end, text[hit_start:hit_end], e164)

    def _proposals(self, run: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, region): spans of ``run`` that could be one number, in reading order."""
        groups = list(self._group.finditer(run))
        digits = "".join(g.group() for g in groups)
        if len(digits) < _MIN_DIGITS:
            return
        # Digits and one-digit groups before group k; the group that starts at each count.
        before, singles = [0], [0]
        for group in groups:
            before.append(before[-1] + len(group.group()))
            singles.append(singles[-1] + (len(group.group()) == 1))
        group_at = {count: k for k, count in enumerate(before)}
        if self._international.match(run):
            yield from _leading_spans(groups, before, _ANY_REGION)
            return
        for region in self._regions:
            if region.international.match(digits):  # "0049 ..." in GB, DE, FR; "011 ..." in US
                yield from _leading_spans(groups, before, region.code)
        for first, group in enumerate(groups):
            start = group.start()
            if first and not any(c.isspace() for c in run[groups[first - 1].end() : start]):
                continue  # a dot or a dash continues the number before ("120.0.6099.109")
            if start and run[start - 1] == "(":
                start -= 1
            for region in self._regions:
                for length in region.lengths(digits, before[first]):
                    last = group_at.get(before[first] + length)
                    # Only a trunk prefix stands alone: "1 (415) ...", "(0)30 ...", not "2 2 2".
                    if last is not None and singles[last] == singles[first + 1]:
                        yield start, groups[last - 1].end(), region.code


def _leading_spans(
    groups: list[re.Match[str]], before: list[int], region: str
) -> Iterator[tuple[int, int, str]]:
    """Spans from the chain's start to each group end, longest first, within the digit limits."""
    for k in range(len(groups), 0, -1):
        if _MIN_DIGITS <= before[k] <= _MAX_DIGITS:
            yield 0, groups[k - 1].end(), region


def _read(masked: str, start: int, end: int, region: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, E.164) of the numbers the matcher accepts in ``masked[start:end]``.

    Two characters either side go along as context (digits there shown as spaces). A bracket
    the matcher took without its partner ("[+49 151 12345678]") is left out of the span.
    """
    before = max(0, start - _CONTEXT)
    window = (
        _blank_digits(masked[before:start])
        + masked[start:end]
        + _blank_digits(masked[end : end + _CONTEXT])
    )
    matcher = PhoneNumberMatcher(
        window, region, leniency=Leniency.STRICT_GROUPING, max_tries=_MAX_TRIES
    )
    for match in matcher:
        first, last = _trim(match.raw_string)
        if last > first:
            e164 = phonenumbers.format_number(match.number, PhoneNumberFormat.E164)
            yield before + match.start + first, before + match.start + last, e164


def _trim(raw: str) -> tuple[int, int]:
    """Bounds of ``raw`` without leading or trailing characters that are not part of a number."""
    first, last = 0, len(raw)
    while first < last and not (raw[first].isdigit() or raw[first] in "+("):
        first += 1
    while last > first and not (raw[last - 1].isdigit() or raw[last - 1] == ")"):
        last -= 1
    if raw[first:last].startswith("(") and ")" not in raw[first:last]:
        first += 1
    if raw[first:last].endswith(")") and "(" not in raw[first:last]:
        last -= 1
    return first, last


def _region(code: str) -> _Region:
    phonenumbers.example_number(code)  # load the metadata now, not in a worker thread
    metadata = PhoneMetadata.metadata_for_region(code)
    lengths = sorted(
        (n for n in metadata.general_desc.possible_length if _MIN_DIGITS - 1 <= n <= _MAX_DIGITS),
        reverse=True,
    )
    return _Region(
        code=code,
        trunk=metadata.national_prefix or "",
        trunk_optional=metadata.country_code == _NANP_COUNTRY_CODE,
        national_lengths=tuple(lengths),
        national=re.compile(metadata.general_desc.national_number_pattern),
        international=re.compile(metadata.international_prefix or "(?!)"),
    )


def _blank_digits(context: str) -> str:
    return "".join(" " if c.isdigit() else c for c in context)
