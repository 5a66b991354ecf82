"""Retrain jobs: their state, timings and outcome, persisted, with one active job per alias.

A job is created ``queued`` (by a drift alarm, the schedule, or an operator) and moves along::

    queued ──▶ running ──▶ succeeded ──▶ gating ──▶ canary ──▶ promoted ──▶ rolled_back
       │          │            │            │          │
       │          │            │            ├──▶ rejected      (the gate kept the champion)
       │          │            │            │          └──▶ rolled_back (the canary did not hold)
       └──────────┴────────────┴────────────┴──────────┴──▶ failed     (from any active state)
                                                          └──▶ cancelled (an operator's cancel)

``succeeded`` = trained and registered; ``gating`` = on the frozen set (and shadow traffic);
``canary`` = on a share of live traffic. Those and ``queued`` and ``running`` are *active*:
they hold the alias, so a second job for it is refused with ``JobConflict``. The database
enforces that, not a read-then-write check: each row carries ``active_alias``, equal to
``alias`` while the job is active and NULL after, under a unique constraint (NULLs never
collide in SQLite, PostgreSQL or MySQL). Two gateways racing on one database therefore cannot
both create a job.

Every method is synchronous and transactional (the gateway calls them from worker threads).
State changes are compare-and-set on the state the change was validated against, so two
writers can never both move the same job.

A job may name its ``owner``: an opaque id of the process carrying it on (the gateway passes
its process id; this library knows nothing of processes). ``fail_interrupted`` spares the
active jobs whose owner is still live.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    UniqueConstraint,
    or_,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from adapters.registry import InUse, NotFound, RegistryError, check_name
from adapters.store import Base, utcnow

JobState = Literal[
    "queued", "running", "succeeded", "gating", "canary",
    "failed", "cancelled", "rejected", "promoted", "rolled_back",
]  # fmt: skip
Trigger = Literal["drift", "schedule", "manual"]

ACTIVE: frozenset[str] = frozenset({"queued", "running", "succeeded", "gating", "canary"})
"""States that hold the alias: the job's work is not over."""

_ENDS = frozenset({"failed", "cancelled"})  # every active state may end so

TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "queued": frozenset({"running"}) | _ENDS,
        "running": frozenset({"succeeded"}) | _ENDS,
        "succeeded": frozenset({"gating"}) | _ENDS,
        "gating": frozenset({"canary", "rejected"}) | _ENDS,
        # rolled_back from canary: the canary did not hold, so it never took all traffic
        "canary": frozenset({"promoted", "rolled_back"}) | _ENDS,
        "promoted": frozenset({"rolled_back"}),
        "failed": frozenset(),
        "cancelled": frozenset(),
        "rejected": frozenset(),
        "rolled_back": frozenset(),
    }
)
"""Allowed moves, from state to the states it may become."""

_FIELDS = frozenset(
    {"dataset_hash", "adapter_path", "served_name", "log_path", "verdict", "error", "detail"}
)
_STATES = frozenset(get_args(JobState))
_TRIGGERS = frozenset(get_args(Trigger))


class RetrainJobRow(Base):
    """One retrain job; ``active_alias`` is the alias while the job is active, else NULL."""

    __tablename__ = "retrain_jobs"
    __table_args__ = (
        UniqueConstraint("active_alias", name="uq_retrain_jobs_active_alias"),
        CheckConstraint(
            "active_alias IS NULL OR active_alias = alias", name="ck_retrain_jobs_active_alias"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(64), index=True)
    active_alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    dataset_hash: Mapped[str | None] = mapped_column(String(80), nullable=True)
    adapter_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    served_name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    log_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the process on it


class JobRecord(BaseModel):
    """A retrain job as the API shows it. Times are UTC."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    alias: str
    state: JobState
    trigger: Trigger
    dataset_hash: str | None
    adapter_path: str | None
    served_name: str | None
    log_path: str | None
    verdict: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    detail: dict[str, Any]
    owner: str | None = None  # the id of the process carrying the job on (None: not recorded)

    @field_validator("created_at", "started_at", "finished_at", "updated_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # SQLite hands back naive datetimes; everything written here is UTC.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class JobConflict(InUse):
    """The alias already has an active job; ``job_id`` is that job."""

    def __init__(self, alias: str, job_id: int, state: str) -> None:
        super().__init__(
            "job_active", f"alias {alias} already has an active retrain job ({job_id}, {state})"
        )
        self.alias = alias
        self.job_id = job_id


class JobStore:
    """Retrain jobs over a SQLAlchemy engine (the gateway owns it and passes it in)."""

    def __init__(self, engine: Engine) -> None:
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(
        self,
        alias: str,
        *,
        trigger: str,
        detail: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> JobRecord:
        """Queue a job for ``alias``; ``JobConflict`` when the alias already has an active one.

        ``owner`` is the id of the process that will carry the job on (see ``fail_interrupted``).
        """
        check_name("alias", alias)
        if trigger not in _TRIGGERS:
            raise RegistryError(
                "bad_trigger", f"trigger must be one of {sorted(_TRIGGERS)}, not {trigger!r}"
            )
        # A friendly early answer; the unique constraint below is what actually decides.
        self._refuse_if_active(alias)
        try:
            with self._sessions.begin() as session:
                now = utcnow()
                row = RetrainJobRow(
                    alias=alias, active_alias=alias, state="queued", trigger=trigger,
                    detail=dict(detail or {}), created_at=now, updated_at=now, owner=owner,
                )  # fmt: skip
                session.add(row)
                session.flush()
                return JobRecord.model_validate(row)
        except IntegrityError as exc:  # another writer took the alias between check and insert
            self._refuse_if_active(alias)  # raises JobConflict naming the winner
            raise InUse(  # the winner already finished: rare enough that a retry is fine
                "job_active", f"another retrain job for alias {alias} was created at once; retry"
            ) from exc

    def transition(self, job_id: int, state: JobState, **fields: Any) -> JobRecord:
        """Move a job to ``state``, setting ``fields`` with it (all or nothing).

        ``fields`` are any of dataset_hash, adapter_path, served_name, log_path, verdict,
        error and detail (``detail`` is merged into the job's, the others replace). Moving to
        ``running`` sets ``started_at``; leaving the active states (failed, rejected, promoted)
        sets ``finished_at`` and frees the alias. Moves not in ``TRANSITIONS`` are refused with
        ``RegistryError("bad_transition")``.
        """
        if state not in _STATES:
            raise RegistryError("bad_state", f"unknown job state {state!r}")
        values = _field_values(fields)
        with self._sessions.begin() as session:
            row = self._row(session, job_id)
            if state not in TRANSITIONS[row.state]:
                allowed = ", ".join(sorted(TRANSITIONS[row.state])) or "none (it is final)"
                raise RegistryError(
                    "bad_transition",
                    f"retrain job {job_id} is {row.state} and cannot become {state} "
                    f"(allowed: {allowed})",
                )
            now = utcnow()
            values.update(state=state, updated_at=now)
            if "detail" in values:
                values["detail"] = {**row.detail, **values["detail"]}
            if state == "running":
                values["started_at"] = now
            if row.state in ACTIVE and state not in ACTIVE:  # the job's work has ended
                values["finished_at"] = now
            if state not in ACTIVE:
                values["active_alias"] = None
            return self._compare_and_set(session, row, values)

    def update(self, job_id: int, **fields: Any) -> JobRecord:
        """Set ``fields`` (as in ``transition``) on an active job without changing its state."""
        values = _field_values(fields)
        with self._sessions.begin() as session:
            row = self._row(session, job_id)
            if row.state not in ACTIVE:
                raise RegistryError(
                    "job_finished", f"retrain job {job_id} is {row.state}; its record is final"
                )
            if "detail" in values:
                values["detail"] = {**row.detail, **values["detail"]}
            values["updated_at"] = utcnow()
            return self._compare_and_set(session, row, values)

    def get(self, job_id: int) -> JobRecord:
        with self._sessions() as session:
            return JobRecord.model_validate(self._row(session, job_id))

    def jobs(self, *, alias: str | None = None, limit: int = 50) -> list[JobRecord]:
        """The newest ``limit`` jobs, newest first, of one alias or of all."""
        if limit < 1:
            raise RegistryError("bad_limit", "limit must be at least 1")
        query = select(RetrainJobRow).order_by(RetrainJobRow.id.desc()).limit(limit)
        if alias is not None:
            query = query.where(RetrainJobRow.alias == alias)
        with self._sessions() as session:
            return [JobRecord.model_validate(row) for row in session.scalars(query)]

    def active(self, alias: str) -> JobRecord | None:
        """The job holding ``alias`` (in one of the ``ACTIVE`` states), if any."""
        with self._sessions() as session:
            row = session.scalar(select(RetrainJobRow).where(RetrainJobRow.active_alias == alias))
            return JobRecord.model_validate(row) if row is not None else None

    def fail_interrupted(
        self, *, reason: str, live_owners: Collection[str] | None = None
    ) -> list[int]:
        """Mark active jobs whose owner is gone failed with ``error=reason``; the ids, oldest
        first.

        Called when a gateway starts: a job's trainer and its gate run inside the gateway
        process that started them (its ``owner``), so a job whose owner has stopped will never
        be carried on. ``live_owners`` are the ids of the processes still running: their jobs
        are spared, and every other active job (no owner, or one not in ``live_owners``) is
        failed. ``None`` fails every active job (one process on the database, or no way to
        tell which are live). That includes ``succeeded`` jobs (trained, awaiting the gate):
        their adapter folder stays on disk at ``adapter_path``, but the job is failed and the
        alias freed, so the next drift alarm or operator can start afresh. The state each job
        was in is kept in ``detail["interrupted_in"]``.
        """
        query = (
            select(RetrainJobRow)
            .where(RetrainJobRow.state.in_(sorted(ACTIVE)))
            .order_by(RetrainJobRow.id)
        )
        owners = sorted(set(live_owners or ()))
        if owners:  # NOT IN is never true of NULL: jobs without an owner are named apart
            query = query.where(
                or_(RetrainJobRow.owner.is_(None), RetrainJobRow.owner.not_in(owners))
            )
        with self._sessions.begin() as session:
            rows = list(session.scalars(query))
            now = utcnow()
            values = {"state": "failed", "active_alias": None, "error": reason,
                      "finished_at": now, "updated_at": now}  # fmt: skip
            failed = []
            for row in rows:  # compare-and-set: a job its live owner just moved is left alone
                moved = session.execute(
                    sql_update(RetrainJobRow)
                    .where(RetrainJobRow.id == row.id, RetrainJobRow.state == row.state)
                    .values(detail={**row.detail, "interrupted_in": row.state}, **values)
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount == 1:
                    failed.append(row.id)
            return failed

    # --- helpers -----------------------------------------------------------------------------
    def _refuse_if_active(self, alias: str) -> None:
        with self._sessions() as session:
            row = session.scalar(select(RetrainJobRow).where(RetrainJobRow.active_alias == alias))
            if row is not None:
                raise JobConflict(alias, row.id, row.state)

    @staticmethod
    def _row(session: Session, job_id: int) -> RetrainJobRow:
        row = session.get(RetrainJobRow, job_id)
        if row is None:
            raise NotFound(f"retrain job {job_id}")
        return row

    @staticmethod
    def _compare_and_set(session: Session, row: RetrainJobRow, values: dict[str, Any]) -> JobRecord:
        """Write ``values`` only if the job is still in the state they were checked against."""
        result = session.execute(
            sql_update(RetrainJobRow)
            .where(RetrainJobRow.id == row.id, RetrainJobRow.state == row.state)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise RegistryError(
                "job_changed",
                f"retrain job {row.id} changed state while this change was being made; retry",
            )
        session.refresh(row)
        return JobRecord.model_validate(row)


def _field_values(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - _FIELDS
    if unknown:
        raise TypeError(
            f"unknown job field(s) {sorted(unknown)}; allowed: {', '.join(sorted(_FIELDS))}"
        )
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "detail" and not isinstance(value, dict):
            raise TypeError("detail must be a dict (use {} to add nothing)")
        if name in ("verdict", "detail"):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
            values[name] = dict(value) if value is not None else None
        elif value is None or isinstance(value, str):
            values[name] = value
        elif isinstance(value, Path):
            values[name] = str(value)
        else:
            raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return values
