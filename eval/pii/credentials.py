"""Secrets: API keys with a known prefix, JWTs, Bearer/Basic credentials, ``password=...``.

A header or label that announces a secret stays in the text ("Authorization: Bearer <SECRET>",
``"password": "<SECRET>"``); only the secret itself is a finding.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

from eval.pii.findings import SECRET, Finding

# Keys whose prefix says what they are; the body must mix letters and digits.
_PREFIXED = (
    r"(?<![\w-])(?:"
    r"(?:sk|rk)[-_](?:live[-_]|test[-_]|proj-|svcacct-|admin-|ant-(?:api|admin)\d{2}-)?"
    r"[A-Za-z0-9_-]{20,256}"
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"
    r"|github_pat_[A-Za-z0-9_]{40,255}"
    r"|glpat-[A-Za-z0-9_-]{20,64}"
    r"|hf_[A-Za-z0-9]{30,64}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|xox[abposre]-[A-Za-z0-9-]{10,250}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}"
    r")(?![\w-])"
)
# Plain substrings every prefixed key contains: a cheap test before the regex runs.
_PREFIX_MARKERS = (
    *("sk-", "sk_", "rk-", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    *("glpat-", "hf_", "npm_", "xox", "AIza", "AKIA", "ASIA", "AGPA", "AIDA", "AROA"),
)
_LABEL_MARKERS = ("key", "secret", "token", "password", "passwd", "pwd")
_JWT = (
    r"e(?<![\w-]e)yJ[A-Za-z0-9_-]{4,4096}={0,2}\.[A-Za-z0-9_-]{4,16384}={0,2}"
    r"\.[A-Za-z0-9_-]{0,4096}={0,2}(?![\w-])"
)
_BEARER = r"(?i:\bbearer)[ \t]+([A-Za-z0-9._~+/-]{16,8192}=*)(?![\w.~+/=-])"
_BASIC = r"(?i:\bbasic)[ \t]+([A-Za-z0-9+/]{8,1024}={0,2})(?![\w+/=])"
# A labelled value ("password: ..."), but not a pseudonym such as <SECRET:3fa9c1>.
_LABELLED = (
    r"(?<!<)(?i:\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?token|"
    r"auth[_-]?token|refresh[_-]?token|token|password|passwd|pwd))"
    r"[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"'<>,;]{6,256})"
)
_PRIVATE_KEY = (
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]{1,16384}?-----END (?:[A-Z]+ )?PRIVATE KEY-----"
)


class SecretDetector:
    """API keys, tokens, passwords and private keys, each reported as a ``secret``."""

    kind = SECRET

    def __init__(self) -> None:
        self._prefixed = re.compile(_PREFIXED)
        self._jwt = re.compile(_JWT)
        self._bearer = re.compile(_BEARER)
        self._basic = re.compile(_BASIC)
        self._labelled = re.compile(_LABELLED)
        self._private_key = re.compile(_PRIVATE_KEY)

    def find(self, text: str) -> Iterator[Finding]:
        lowered = text.lower()
        if any(marker in text for marker in _PREFIX_MARKERS):
            for match in self._prefixed.finditer(text):
                if _mixed(match.group()):
                    yield _finding(match, 0)
        if "eyJ" in text:
            for match in self._jwt.finditer(text):
                if _json_header(match.group()):
                    yield _finding(match, 0)
        if "bearer" in lowered:
            for match in self._bearer.finditer(text):
                token = match.group(1)
                if _mixed(token) or len(token) >= 32:
                    yield _finding(match, 1)
        if "basic" in lowered:
            for match in self._basic.finditer(text):
                if _basic_credentials(match.group(1)):
                    yield _finding(match, 1)
        if any(marker in lowered for marker in _LABEL_MARKERS):
            for match in self._labelled.finditer(text):
                value = match.group(1)
                if len(value) >= 16 or not value.isalpha():
                    yield _finding(match, 1)
        if "-----BEGIN" in text:
            for match in self._private_key.finditer(text):
                yield _finding(match, 0)


def _finding(match: re.Match[str], group: int) -> Finding:
    return Finding(SECRET, match.start(group), match.end(group), match.group(group))


def _mixed(token: str) -> bool:
    """Generated keys mix letters and digits; words and kebab-case names do not."""
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def _b64decode(part: str, *, urlsafe: bool) -> bytes | None:
    padded = part.rstrip("=") + "=" * (-len(part.rstrip("=")) % 4)
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json_header(token: str) -> bool:
    """A JWT's first part is base64url of a JSON object (``{"alg": ...}``)."""
    raw = _b64decode(token.split(".", 1)[0], urlsafe=True)
    if raw is None:
        return False
    try:
        return isinstance(json.loads(raw), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def _basic_credentials(token: str) -> bool:
    """HTTP Basic credentials are base64 of ``user:password``."""
    raw = _b64decode(token, urlsafe=False)
    if raw is None:
        return False
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return ":" in decoded and decoded.isprintable()
