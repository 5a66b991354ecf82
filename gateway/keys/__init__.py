"""Managed API keys (``/admin/keys``): hashed at rest, each with its models, limits and usage.

Kept import-light: the request context and the auth middleware import ``principal`` only.
"""

from gateway.keys.principal import ApiKeyPrincipal

__all__ = ["ApiKeyPrincipal"]
