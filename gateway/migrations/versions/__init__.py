"""Alembic revisions, chained by ``down_revision`` (a package, so wheels carry them)."""
