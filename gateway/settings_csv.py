"""Parsing of comma-separated setting values, shared by ``Settings`` and its field-group mixins.

A module of its own so the mixins can use it without importing ``gateway.settings``, which
imports them.
"""

from __future__ import annotations

__all__ = ["split_csv"]


def split_csv(value: object) -> object:
    """Accept ``a,b,c`` from the environment as well as a list (whose items may be ``a,b``
    too, as a repeated command-line option gives them)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [part for item in value for part in split_csv(item)]  # type: ignore[union-attr]
    return value
