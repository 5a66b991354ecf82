"""Tenants and trust: who made each sample and feedback, key collection scopes, dashboard sessions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

- ``eval_samples.key_id`` (the managed key that made the request) and
  ``eval_samples.client_request_id``
  (the client's own ``x-request-id``, kept as its correlation id; ``request_id`` is the
  gateway's own from now on); ``eval_feedback.key_id`` (who posted it).
- ``api_keys.collections``: the collections a key may use (NULL: every one, as before).
- ``dashboard_sessions``: sign-ins revocable server-side (the SHA-256 of each session token).
- ``gateway_secrets``: per-deployment secrets made on first start (the sampling salt).

Rows made before this revision have NULL in the new columns: owned by nobody, so only the
admin token reaches them. As in 0002, what a library's own ``create_all`` already made is left.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS: dict[str, list[sa.Column]] = {
    "eval_samples": [
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("client_request_id", sa.String(length=128), nullable=True),
    ],
    "eval_feedback": [sa.Column("key_id", sa.String(length=32), nullable=True)],
    "api_keys": [sa.Column("collections", sa.JSON(), nullable=True)],
}


def upgrade() -> None:
    present = sa.inspect(op.get_bind())
    for table, columns in _COLUMNS.items():
        have = {column["name"] for column in present.get_columns(table)}
        missing = [column for column in columns if column.name not in have]
        if missing:
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)
    indexes = {index["name"] for index in present.get_indexes("eval_samples")}
    if "ix_eval_samples_key_id" not in indexes:
        op.create_index("ix_eval_samples_key_id", "eval_samples", ["key_id"], unique=False)
    if not present.has_table("dashboard_sessions"):
        op.create_table(
            "dashboard_sessions",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            "ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"], unique=False
        )
    if not present.has_table("gateway_secrets"):
        op.create_table(
            "gateway_secrets",
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("value", sa.String(length=256), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )


def downgrade() -> None:
    op.drop_table("gateway_secrets")
    op.drop_index("ix_dashboard_sessions_expires_at", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_index("ix_eval_samples_key_id", table_name="eval_samples")
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
