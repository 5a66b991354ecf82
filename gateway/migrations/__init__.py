"""The database schema's history: an Alembic environment shipped inside the gateway package.

The libraries (``adapters``, ``retrieval``, ``eval``) and the gateway's key store keep
declaring their own tables; the gateway, as the composition root, is the one place that knows
them all, so the migrations live here and target the union of their metadata.

Adding a schema change: change the library's table, then write the next revision in
``versions/``. Alembic drafts it from a database at the current head::

    from alembic import command
    from gateway.db import alembic_config
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", "sqlite:////tmp/draft.db")
    command.upgrade(config, "head")
    command.revision(config, message="what changed", autogenerate=True)

``tests/gateway/test_db.py`` fails until the revisions produce exactly the tables the code
declares, on SQLite and PostgreSQL. Revisions never import the libraries' models: each one is
frozen at the schema it was written for (SQLite needs ``op.batch_alter_table`` for most
changes to a column).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import MetaData

SCRIPT_LOCATION = "gateway:migrations"
"""Where Alembic finds ``env.py`` and ``versions/`` (a package resource, so wheels carry it)."""


def target_metadata() -> MetaData:
    """Every table the code declares today, in one ``MetaData`` (a copy: the libraries' own
    ``Base.metadata`` objects are left as they are)."""
    # Imported here: each import registers its tables on its library's Base.
    import adapters.dataset_tables  # noqa: F401  (dataset_versions, dataset_frozen_sets)
    import adapters.jobs  # noqa: F401  (retrain_jobs)
    from adapters.store import Base as AdapterTables
    from eval.tables import Base as EvalTables
    from gateway.keys.tables import Base as KeyTables
    from gateway.presence_tables import Base as PresenceTables
    from retrieval.store import Base as RetrievalTables

    union = MetaData()
    for base in (AdapterTables, RetrievalTables, EvalTables, KeyTables, PresenceTables):
        for table in base.metadata.sorted_tables:
            table.to_metadata(union)
    return union


def include_name(metadata: MetaData) -> Callable[[str | None, str, Any], bool]:
    """Alembic's ``include_name`` hook: compare only our tables, so a database shared with
    other software never gets a migration that drops theirs."""

    def include(name: str | None, type_: str, _parent_names: Any) -> bool:
        return type_ != "table" or name in metadata.tables or name == "alembic_version"

    return include


__all__ = ["SCRIPT_LOCATION", "include_name", "target_metadata"]
