"""Pattern detectors: a regex proposes candidates, a checksum or a parser confirms them.

Each detector compiles its patterns once, in ``__init__``, and keeps no state between calls,
so one instance serves many threads. Some start with a cheap test on the whole text (an
``@`` for emails, three dots for IPv4, ``::`` for IPv6) so that plain prose costs less.
Every quantifier is bounded, so no input makes a pattern backtrack for long, and patterns
start with a character class (the look-behind comes after it), which lets the regex engine
skip ahead instead of trying the look-behind at every position.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from stdnum import iban as stdnum_iban
from stdnum import luhn

from eval.pii.findings import CARD, EMAIL, IBAN, IP, SSN, Finding

# Unicode letters are allowed (RFC 6531 addresses such as zoë@exemple.fr).
_EMAIL = (
    r"(?<![\w.%+-])\w[\w.%+-]{0,63}"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}[^\W\d_]{2,24}(?![\w-])"
)
# 13 to 19 digits, optionally grouped by single spaces or dashes.
_CARD = r"\d(?<![\w.,-]\d)(?:[ -]?\d){12,18}(?!\w|[.,-]\d)"
# Country, check digits, then the BBAN in groups of four, optionally space-separated.
_IBAN = (
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}"
    r"(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)
_IBAN_MIN_LENGTH = 15  # Norway's, the shortest
_IBAN_TRIMS = 2
_SSN_DASHED = r"\d(?<![\w-]\d)\d\d-\d{2}-\d{4}(?![\w-]|\.\d)"
# Unformatted or space-separated SSNs only after an explicit label.
_SSN_LABELLED = (
    r"(?i:\bssn|\bsocial security(?: number| no\.?)?)[\s:#=]{0,4}"
    r"(\d{3})([ ]?)(\d{2})\2(\d{4})(?![\w-]|\.\d)"
)
_IPV4 = r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)"
_IPV6 = (
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|(?=::))(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:\.\d{1,3}){0,3}(?![\w:]|\.\d)"
)
# Words that make a dotted quad a version or a section number, not an address.
_VERSION_CONTEXT = (
    r"(?i)(?:\b(?:version|ver|release|build|firmware|revision|rev|section|chapter|table|"
    r"figure|step|rule|clause)\.?\s*[:#=]?\s*|(?:[=<>~!]=|[<>^~])\s*|\bv)$"
)
_VERSION_LOOKBACK = 24


class EmailDetector:
    """Email addresses with a dotted domain and an alphabetic top-level label."""

    kind = EMAIL

    def __init__(self) -> None:
        self._pattern = re.compile(_EMAIL)

    def find(self, text: str) -> Iterator[Finding]:
        if "@" not in text:
            return
        for match in self._pattern.finditer(text):
            value = match.group()
            yield Finding(EMAIL, match.start(), match.end(), value, value.lower())


class CardDetector:
    """Payment card numbers: 13-19 digits, a card-issuer first digit, card grouping, Luhn."""

    kind = CARD

    def __init__(self) -> None:
        self._pattern = re.compile(_CARD)

    def find(self, text: str) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            value = match.group()
            digits = _card_digits(value)
            if digits is not None:
                yield Finding(CARD, match.start(), match.end(), value, digits)


def _card_digits(value: str) -> str | None:
    """The digits of ``value`` when it is plausibly a card number, else None."""
    separators = {c for c in value if not c.isdigit()}
    if len(separators) > 1:
        return None
    groups = [len(g) for g in re.split(r"[ -]", value)] if separators else [len(value)]
    if len(groups) > 1 and not _card_grouping(groups):
        return None
    digits = "".join(c for c in value if c.isdigit())
    if digits[0] not in "23456" or not 13 <= len(digits) <= 19:
        return None
    return digits if luhn.is_valid(digits) else None


def _card_grouping(groups: list[int]) -> bool:
    """The groupings printed on cards: 4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4."""
    return groups in ([4, 4, 4, 4], [4, 4, 4, 4, 3], [4, 6, 5], [4, 6, 4])


class IbanDetector:
    """IBANs in capitals, compact or in groups of four, confirmed by mod-97 and the BBAN shape.

    A candidate that fails is retried without its last one or two groups, so a word in
    capitals after the IBAN ("... 6769 CODE") does not hide it.
    """

    kind = IBAN

    def __init__(self) -> None:
        self._pattern = re.compile(_IBAN)

    def find(self, text: str) -> Iterator[Finding]:
        for match in self._pattern.finditer(text):
            tokens = match.group().split(" ")
            for count in range(len(tokens), max(0, len(tokens) - _IBAN_TRIMS - 1), -1):
                value = " ".join(tokens[:count])
                if len(value) < _IBAN_MIN_LENGTH:
                    break
                if stdnum_iban.is_valid(value):
                    start = match.start()
                    yield Finding(IBAN, start, start + len(value), value, value.replace(" ", ""))
                    break


class SsnDetector:
    """US social security numbers: ``AAA-GG-SSSS``, or unformatted after an SSN label.

    Numbers the SSA never issues are not SSNs: area 000, 666 or 900-999, group 00, serial 0000.
    """

    kind = SSN

    def __init__(self) -> None:
        self._dashed = re.compile(_SSN_DASHED)
        self._labelled = re.compile(_SSN_LABELLED)

    def find(self, text: str) -> Iterator[Finding]:
        for match in self._dashed.finditer(text) if "-" in text else ():
            area, group, serial = match.group().split("-")
            if _ssn_issuable(area, group, serial):
                yield self._finding(match, 0)
        lowered = text.lower()
        if "ssn" not in lowered and "social security" not in lowered:
            return
        for match in self._labelled.finditer(text):
            if _ssn_issuable(match.group(1), match.group(3), match.group(4)):
                yield self._finding(match, 1)

    @staticmethod
    def _finding(match: re.Match[str], first_group: int) -> Finding:
        start = match.start(first_group) if first_group else match.start()
        value = match.string[start : match.end()]
        return Finding(SSN, start, match.end(), value, "".join(c for c in value if c.isdigit()))


def _ssn_issuable(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


class IpDetector:
    """IPv4 and IPv6 addresses, confirmed by ``ipaddress``.

    Left alone: loopback and unspecified addresses (``127.0.0.1``, ``0.0.0.0``, ``::1``: they
    identify no one), IPv6 forms without a digit (``a::b`` is code), and a dotted quad right
    after a version or section word (``v10.0.1.2``, ``version 1.2.3.4``, ``==1.0.0.1``,
    ``section 2.1.1.3``). Any other valid dotted quad is an address: a leaked IP costs more
    than a masked four-part number.
    """

    kind = IP

    def __init__(self) -> None:
        self._v4 = re.compile(_IPV4)
        self._v6 = re.compile(_IPV6)
        self._version_context = re.compile(_VERSION_CONTEXT)

    def find(self, text: str) -> Iterator[Finding]:
        if text.count(".") >= 3:
            for match in self._v4.finditer(text):
                before = text[max(0, match.start() - _VERSION_LOOKBACK) : match.start()]
                if self._version_context.search(before):
                    continue
                finding = _address(match)
                if finding is not None:
                    yield finding
        if "::" in text or text.count(":") >= 7:
            for match in self._v6.finditer(text):
                finding = _address(match)
                if finding is not None:
                    yield finding


def _address(match: re.Match[str]) -> Finding | None:
    value = match.group()
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified:
        return None
    if address.version == 6 and not any(c.isdigit() for c in value):
        return None  # "a::b", "dead::beef": code far more often than an address
    return Finding(IP, match.start(), match.end(), value, address.compressed)
