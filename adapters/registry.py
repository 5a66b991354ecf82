"""The adapter registry: versions, aliases and the audit log, in one SQL database.

Every method is synchronous and transactional (the gateway calls them from worker threads):
either the whole change and its audit event are written, or nothing is. Versions are never
reused: ``extract@v3`` means one folder forever, which is also why a new version gets a new
vLLM name instead of reloading an old one (vLLM #42125: stale prefix-cache blocks).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapters.store import AdapterVersionRow, AliasRow, Base, EventRow
from adapters.validation import AdapterInfo

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ALIAS_WEIGHT_TOTAL = 100
REGISTRY_CHANNEL = "tuneloop_registry"
RETIRED = ("deleted", "rejected")  # statuses of versions that never route again
"""PostgreSQL: the channel every transaction that records an event notifies (payload: the
event's id), delivered on commit only, so other processes need not wait for their next poll."""


class RegistryError(ValueError):
    """A registry operation was refused; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotFound(RegistryError):
    def __init__(self, what: str) -> None:
        super().__init__("not_found", f"{what} does not exist")


class InUse(RegistryError):
    pass


class AdapterRecord(BaseModel):
    """An adapter version as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    version: int
    served_name: str
    path: str
    base_model: str
    rank: int
    alpha: int | None
    target_modules: list[str]
    dataset_hash: str | None
    metrics: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime


class AliasRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    targets: dict[str, int]
    previous_targets: dict[str, int] | None
    response_format: dict[str, Any] | None = None
    retrieval: dict[str, Any] | None = None
    updated_at: datetime


class EventRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    kind: str
    subject: str
    detail: dict[str, Any]


def check_name(kind: str, name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):  # match() would let a trailing newline through
        raise RegistryError(
            "bad_name",
            f"{kind} name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )


def check_weights(targets: dict[str, int]) -> None:
    if not targets:
        raise RegistryError("bad_targets", "an alias needs at least one target")
    if any(not isinstance(w, int) or w < 0 for w in targets.values()):
        raise RegistryError("bad_targets", "target weights must be non-negative integers")
    if sum(targets.values()) != ALIAS_WEIGHT_TOTAL:
        raise RegistryError(
            "bad_targets",
            f"target weights must sum to {ALIAS_WEIGHT_TOTAL}, not {sum(targets.values())}",
        )


class Registry:
    """Adapter versions, aliases and events over a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        Base.metadata.create_all(engine)
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # --- adapters ----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        info: AdapterInfo,
        *,
        dataset_hash: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> AdapterRecord:
        """Record the next version of ``name`` for the validated folder ``info``."""
        check_name("adapter", name)
        try:
            return self._register(name, info, dataset_hash=dataset_hash, metrics=metrics)
        except IntegrityError as exc:  # another gateway on the same database took the number
            raise InUse(
                "version_conflict", f"another registration of {name} took the same version; retry"
            ) from exc

    def _register(
        self,
        name: str,
        info: AdapterInfo,
        *,
        dataset_hash: str | None,
        metrics: dict[str, Any] | None,
    ) -> AdapterRecord:
        with self._sessions.begin() as session:
            last = session.scalar(
                select(func.max(AdapterVersionRow.version)).where(AdapterVersionRow.name == name)
            )
            version = (last or 0) + 1
            row = AdapterVersionRow(
                name=name,
                version=version,
                served_name=f"{name}@v{version}",
                path=str(info.path),
                base_model=info.base_model,
                rank=info.rank,
                alpha=info.alpha,
                target_modules=info.target_modules,
                dataset_hash=dataset_hash,
                metrics=metrics or {},
                status="registered",
            )
            session.add(row)
            self._event(
                session,
                "adapter_registered",
                row.served_name,
                path=row.path,
                dataset_hash=dataset_hash,
                rank=info.rank,
            )
            session.flush()
            return AdapterRecord.model_validate(row)

    def set_status(self, served_name: str, status: str, **detail: Any) -> AdapterRecord:
        with self._sessions.begin() as session:
            row = self._adapter(session, served_name)
            row.status = status
            self._event(session, f"adapter_{status}", served_name, **detail)
            session.flush()
            return AdapterRecord.model_validate(row)

    def get(self, served_name: str) -> AdapterRecord:
        with self._sessions() as session:
            return AdapterRecord.model_validate(self._adapter(session, served_name))

    def adapters(self, *, include_deleted: bool = False) -> list[AdapterRecord]:
        with self._sessions() as session:
            query = select(AdapterVersionRow).order_by(
                AdapterVersionRow.name, AdapterVersionRow.version
            )
            if not include_deleted:
                query = query.where(AdapterVersionRow.status != "deleted")
            return [AdapterRecord.model_validate(r) for r in session.scalars(query)]

    def delete(self, served_name: str, *, status: str = "deleted") -> AdapterRecord:
        """Retire a version, kept for lineage as ``deleted`` (an operator's) or ``rejected`` (a
        challenger the loop did not promote; still listed); refused while an alias uses it."""
        if status not in RETIRED:
            raise RegistryError("bad_status", f"a version is retired as one of {sorted(RETIRED)}")
        with self._sessions.begin() as session:
            row = self._adapter(session, served_name)
            users = [
                alias.name
                for alias in session.scalars(select(AliasRow))
                if served_name in alias.targets
            ]
            if users:
                raise InUse(
                    "in_use", f"{served_name} is a target of alias {', '.join(sorted(users))}"
                )
            row.status = status
            self._event(session, f"adapter_{status}", served_name)
            session.flush()
            return AdapterRecord.model_validate(row)

    # --- aliases -----------------------------------------------------------------------------
    def set_alias(
        self,
        alias: str,
        targets: dict[str, int],
        *,
        response_format: dict[str, Any] | None = None,
        retrieval: dict[str, Any] | None = None,
    ) -> AliasRecord:
        """Point ``alias`` at ``targets`` (served name -> weight), remembering the old ones.

        ``response_format`` and ``retrieval`` bind defaults to the alias (``None`` clears one).
        """
        check_name("alias", alias)
        check_weights(targets)
        with self._sessions.begin() as session:
            for served_name in targets:
                row = self._adapter(session, served_name)
                if row.status in ("failed", *RETIRED):
                    raise RegistryError(
                        "bad_targets", f"{served_name} is {row.status} and cannot be a target"
                    )
            current = session.get(AliasRow, alias)
            if (
                current is not None
                and current.targets == targets
                and current.response_format == response_format
                and current.retrieval == retrieval
            ):
                return AliasRecord.model_validate(current)  # idempotent: keeps the previous
            if current is None:
                current = AliasRow(name=alias, targets=dict(targets), previous_targets=None)
                session.add(current)
                previous = None
            elif current.targets != targets:
                previous = dict(current.targets)
                current.previous_targets = previous
                current.targets = dict(targets)
            else:
                previous = current.previous_targets
            current.response_format = response_format
            current.retrieval = retrieval
            self._event(
                session, "alias_set", alias, targets=targets, previous=previous,
                response_format=response_format, retrieval=retrieval,
            )  # fmt: skip
            session.flush()
            return AliasRecord.model_validate(current)

    def rollback_alias(self, alias: str) -> AliasRecord:
        """Swap the alias back to its previous targets (a second rollback undoes the first)."""
        with self._sessions.begin() as session:
            current = session.get(AliasRow, alias)
            if current is None:
                raise NotFound(f"alias {alias}")
            if not current.previous_targets:
                raise RegistryError("no_previous", f"alias {alias} has no previous target")
            for served_name in current.previous_targets:
                if (status := self._adapter(session, served_name).status) in RETIRED:
                    raise RegistryError(
                        "bad_targets", f"previous target {served_name} has been {status}"
                    )
            current.targets, current.previous_targets = (
                dict(current.previous_targets),
                dict(current.targets),
            )
            self._event(
                session,
                "alias_rollback",
                alias,
                targets=current.targets,
                previous=current.previous_targets,
            )
            session.flush()
            return AliasRecord.model_validate(current)

    def alias(self, alias: str) -> AliasRecord:
        with self._sessions() as session:
            row = session.get(AliasRow, alias)
            if row is None:
                raise NotFound(f"alias {alias}")
            return AliasRecord.model_validate(row)

    def aliases(self) -> list[AliasRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(AliasRow).order_by(AliasRow.name))
            return [AliasRecord.model_validate(r) for r in rows]

    def delete_alias(self, alias: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(AliasRow, alias)
            if row is None:
                raise NotFound(f"alias {alias}")
            session.delete(row)
            self._event(session, "alias_deleted", alias, targets=row.targets)

    # --- events ------------------------------------------------------------------------------
    def record(self, kind: str, subject: str, **detail: Any) -> None:
        with self._sessions.begin() as session:
            self._event(session, kind, subject, **detail)

    def events(self, *, limit: int = 100, subject: str | None = None) -> list[EventRecord]:
        with self._sessions() as session:
            query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
            if subject is not None:
                query = query.where(EventRow.subject == subject)
            return [EventRecord.model_validate(r) for r in session.scalars(query)]

    def last_event_id(self) -> int:
        """The newest event's id (0 when none): every change to versions or aliases records an
        event, so a process sharing the database polls this to notice another's changes."""
        with self._sessions() as session:
            return session.scalar(select(func.max(EventRow.id))) or 0

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _adapter(session: Session, served_name: str) -> AdapterVersionRow:
        row = session.scalar(
            select(AdapterVersionRow).where(AdapterVersionRow.served_name == served_name)
        )
        if row is None:
            raise NotFound(f"adapter {served_name}")
        return row

    @staticmethod
    def _event(session: Session, kind: str, subject: str, **detail: Any) -> None:
        """Record an event in the session's transaction; on PostgreSQL also queue a
        notification on ``REGISTRY_CHANNEL``, which the server sends only if it commits."""
        row = EventRow(kind=kind, subject=subject, detail=detail)
        session.add(row)
        if session.get_bind().dialect.name == "postgresql":
            session.flush()  # the row's id, for the payload
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": REGISTRY_CHANNEL, "payload": str(row.id)},
            )
