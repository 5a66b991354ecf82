"""Live gateway processes, and the process that runs each retrain job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Adds the ``gateway_processes`` table (one row per running gateway process, refreshed by its
heartbeat) and ``retrain_jobs.owner`` (the id of the process carrying the job on; NULL for jobs
made before this revision, which a restart fails as before).

A database without ``alembic_version`` is stamped ``0001`` and brought here like any other,
but it may have been made by the libraries' own ``create_all`` from code that already knew
these tables (a job store opened on a fresh file before any gateway started on it): what is
already there is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    present = sa.inspect(op.get_bind())
    if not present.has_table("gateway_processes"):
        _create_processes()
    if "owner" not in {column["name"] for column in present.get_columns("retrain_jobs")}:
        # SQLite: a nullable column is added in place (no copy of the table and its checks).
        with op.batch_alter_table("retrain_jobs") as batch:
            batch.add_column(sa.Column("owner", sa.String(length=36), nullable=True))


def _create_processes() -> None:
    op.create_table(
        "gateway_processes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_event_id", sa.Integer(), nullable=True),
        sa.Column("in_flight", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_gateway_processes_heartbeat_at", "gateway_processes", ["heartbeat_at"], unique=False
    )


def downgrade() -> None:
    with op.batch_alter_table("retrain_jobs") as batch:
        batch.drop_column("owner")
    op.drop_index("ix_gateway_processes_heartbeat_at", table_name="gateway_processes")
    op.drop_table("gateway_processes")
