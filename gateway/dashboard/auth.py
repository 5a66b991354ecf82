"""Dashboard sign-in: stateless signed session cookies derived from the admin token.

A session cookie is ``<expiry>.<hex HMAC-SHA256(key=admin token, msg="dashboard:<expiry>")>``:
it proves that whoever holds it knew the admin token, never contains the token, needs no server
store, and stops working when it expires or when the admin token changes. Every comparison is
constant time. Nothing here knows about HTTP frameworks; the router calls these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

COOKIE_NAME = "tuneloop_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_TTL_S = 12 * 3600
_SAFE_NEXT = re.compile(r"/dashboard(/[A-Za-z0-9_./-]*)?(\?[A-Za-z0-9_.~=&%+-]*)?")


def _signature(key: bytes, expiry: int) -> str:
    return hmac.new(key, f"dashboard:{expiry}".encode(), hashlib.sha256).hexdigest()


def token_matches(presented: str, admin_token: bytes) -> bool:
    """Whether ``presented`` is the admin token (constant time in the presented value)."""
    return hmac.compare_digest(presented.encode(), admin_token)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def new_session(admin_token: bytes, *, now: float | None = None, ttl_s: int = SESSION_TTL_S) -> str:
    """A session cookie value valid for ``ttl_s`` seconds from ``now``."""
    expiry = int(now if now is not None else time.time()) + ttl_s
    return f"{expiry}.{_signature(admin_token, expiry)}"


def session_valid(
    value: str | None,
    admin_token: bytes,
    *,
    now: float | None = None,
    ttl_s: int = SESSION_TTL_S,
) -> bool:
    """Whether ``value`` is an unexpired session signed with ``admin_token``.

    An expiry further ahead than ``ttl_s`` is refused too, so a session cannot outlive the
    lifetime this gateway grants even if it was minted with a longer one.
    """
    if not value:
        return False
    expiry_text, _, signature = value.partition(".")
    if not expiry_text.isdigit() or len(expiry_text) > 12:
        return False
    expiry = int(expiry_text)
    current = now if now is not None else time.time()
    if not current < expiry <= current + ttl_s:
        return False
    return hmac.compare_digest(signature.encode(), _signature(admin_token, expiry).encode())


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path of this gateway, never another site."""
    if target and _SAFE_NEXT.fullmatch(target) and "//" not in target and ".." not in target:
        return target
    return "/dashboard"
