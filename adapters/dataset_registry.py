"""Versioned training datasets per alias: curated JSONL files plus their lineage in SQL.

A version is identified by the hash of its normalised examples (``curation.version_hash``) and
numbered per alias (``extract`` v1, v2, ...). Its examples live in
``<root>/<alias>/<hex>.jsonl`` (one ``{"messages": [...], "source": "..."}`` per line; the
trainer reads only ``messages``) with the removal report beside it (``<hex>.removals.json``).

Each alias has one frozen test set, split off its first import (or given to ``freeze``
before it) and never changed; no version ever holds a frozen input or a near copy of one.

Like ``adapters.registry``, every method is synchronous and transactional (the gateway calls
them from worker threads). Files are written atomically before the row is committed and
removed again when the commit fails, so a failure leaves neither a row nor a final file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from adapters.curation import (
    Candidate,
    Conversation,
    Curated,
    CurationConfig,
    Removal,
    canonical,
    curate,
    curate_and_freeze,
    input_key,
    input_of,
    normalise,
    output_of,
    scrubbed,
    version_hash,
)
from adapters.dataset_tables import DatasetVersionRow, FrozenSetRow
from adapters.datasets import load_conversations
from adapters.registry import RegistryError, check_name
from adapters.store import Base

DIFF_EXAMPLES = 5


class DatasetRegistryError(RegistryError):
    """A dataset operation was refused; ``reason`` is a stable code (``not_found``,
    ``frozen_exists``, ``empty_dataset``, ``unknown_parent``, ``bad_examples``,
    ``version_conflict``, ``corrupt``)."""


class DatasetVersion(BaseModel):
    """A dataset version as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    alias: str
    version: int  # 1, 2, ... per alias
    hash: str  # curation.version_hash of its examples
    parents: list[str]  # hashes of the versions it was built from
    sources: list[str]  # every source offered, first seen first; per example in the JSONL
    counts: dict[str, int]  # candidates, kept, and removals by kind (see Curated.counts)
    path: str  # the JSONL file the trainer reads
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class FrozenSet(BaseModel):
    """An alias's frozen test set, without its examples (``DatasetRegistry.frozen``)."""

    alias: str
    hash: str
    origin: str
    count: int
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was written in UTC: the same instant, aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def candidates_from_file(path: Path, *, source: str | None = None) -> list[Candidate]:
    """The examples of a chat-format JSONL file, checked by ``load_conversations``, each
    tagged with ``source`` (the file's name by default)."""
    return [
        Candidate(conversation, source or path.name) for conversation in load_conversations(path)
    ]


class DatasetRegistry:
    """Dataset versions and frozen test sets over a SQLAlchemy engine and a folder."""

    def __init__(self, engine: Engine, root: Path, *, config: CurationConfig | None = None) -> None:
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._root = Path(root)
        self._config = config or CurationConfig()

    @property
    def config(self) -> CurationConfig:
        return self._config

    # --- writing -----------------------------------------------------------------------------
    def import_examples(
        self,
        alias: str,
        candidates: Sequence[Candidate],
        *,
        parents: Sequence[str] = (),
        scrub: Callable[[str], str] | None = None,
    ) -> tuple[DatasetVersion, list[Removal]]:
        """Curate ``candidates`` into the alias's next version; returns it and the removals.

        The alias's first import splits its frozen test set off first. A result whose hash is
        already a version of the alias returns that version unchanged (no new row, no files).
        The next version usually merges: ``candidates_of(alias, latest) + new`` with
        ``parents=[latest.hash]``.
        """
        check_name("alias", alias)
        parents = list(dict.fromkeys(parents))
        with self._sessions() as session:
            frozen_row = session.get(FrozenSetRow, alias)
            frozen = list(frozen_row.conversations) if frozen_row is not None else None
            known = set(
                session.scalars(
                    select(DatasetVersionRow.hash).where(DatasetVersionRow.alias == alias)
                )
            )
        missing = [parent for parent in parents if parent not in known]
        if missing:
            raise DatasetRegistryError(
                "unknown_parent", f"{', '.join(missing)} is not a dataset version of {alias}"
            )
        new_frozen: list[Conversation] | None = None
        if frozen is None:
            new_frozen, curated = curate_and_freeze(candidates, config=self._config, scrub=scrub)
        else:
            curated = curate(candidates, config=self._config, frozen=frozen, scrub=scrub)
        counts = curated.counts()
        if not curated.kept:
            raise DatasetRegistryError(
                "empty_dataset",
                f"no example of {len(candidates)} is left to train on for {alias} "
                f"after curation ({_summary(counts)})",
            )
        digest = version_hash([candidate.conversation for candidate in curated.kept])
        existing = self._by_hash(alias, digest)
        if existing is not None:
            return existing, curated.removals
        sources = list(dict.fromkeys(candidate.source for candidate in candidates))
        version = self._store(
            alias, digest, curated, parents=parents, sources=sources, counts=counts,
            new_frozen=new_frozen,
        )  # fmt: skip
        return version, curated.removals

    def _store(
        self,
        alias: str,
        digest: str,
        curated: Curated,
        *,
        parents: list[str],
        sources: list[str],
        counts: dict[str, int],
        new_frozen: list[Conversation] | None,
    ) -> DatasetVersion:
        folder = self._root / alias
        folder.mkdir(parents=True, exist_ok=True)
        stem = digest.removeprefix("sha256:")
        data_path = folder / f"{stem}.jsonl"
        report_path = folder / f"{stem}.removals.json"
        lines = "".join(
            json.dumps({"messages": c.conversation, "source": c.source}, ensure_ascii=False) + "\n"
            for c in curated.kept
        )
        report = {
            "alias": alias,
            "hash": digest,
            "counts": counts,
            "removals": [removal.as_dict() for removal in curated.removals],
        }
        written: list[Path] = []
        try:
            for path, text in ((data_path, lines), (report_path, json.dumps(report, indent=1))):
                if not path.exists():  # an orphan of a crash is overwritten, never removed
                    written.append(path)
                _write_atomic(path, text)
            return self._insert(
                alias, digest, parents=parents, sources=sources, counts=counts,
                path=data_path, new_frozen=new_frozen,
            )  # fmt: skip
        except IntegrityError as exc:
            existing = self._by_hash(alias, digest)
            if existing is not None:  # another gateway stored the same examples meanwhile
                return existing
            _remove(written)
            raise DatasetRegistryError(
                "version_conflict", f"another import for {alias} committed first; retry"
            ) from exc
        except BaseException:
            _remove(written)
            raise

    def _insert(
        self,
        alias: str,
        digest: str,
        *,
        parents: list[str],
        sources: list[str],
        counts: dict[str, int],
        path: Path,
        new_frozen: list[Conversation] | None,
    ) -> DatasetVersion:
        with self._sessions.begin() as session:
            last = session.scalar(
                select(func.max(DatasetVersionRow.version)).where(DatasetVersionRow.alias == alias)
            )
            row = DatasetVersionRow(
                alias=alias,
                version=(last or 0) + 1,
                hash=digest,
                parents=parents,
                sources=sources,
                counts=counts,
                path=str(path),
            )
            session.add(row)
            if new_frozen is not None:
                session.add(_frozen_row(alias, new_frozen, origin="split"))
            session.flush()
            return DatasetVersion.model_validate(row)

    def freeze(
        self,
        alias: str,
        conversations: Sequence[Conversation],
        *,
        scrub: Callable[[str], str] | None = None,
    ) -> int:
        """Give the alias its frozen test set explicitly (before its first import); returns
        how many distinct examples were stored. Refused once the alias has one."""
        check_name("alias", alias)
        examples: dict[str, Conversation] = {}
        for index, conversation in enumerate(conversations):
            try:
                example = normalise(scrubbed(conversation, scrub))
            except ValueError as exc:
                raise DatasetRegistryError(
                    "bad_examples", f"frozen example {index}: {exc}"
                ) from exc
            examples.setdefault(canonical(example), example)
        if not examples:
            raise DatasetRegistryError("empty_dataset", f"no frozen examples given for {alias}")
        try:
            with self._sessions.begin() as session:
                if session.get(FrozenSetRow, alias) is not None:
                    raise _frozen_exists(alias)
                session.add(_frozen_row(alias, list(examples.values()), origin="explicit"))
        except IntegrityError as exc:
            raise _frozen_exists(alias) from exc
        return len(examples)

    # --- reading -----------------------------------------------------------------------------
    def frozen(self, alias: str) -> list[Conversation]:
        """The alias's frozen test examples (normalised, scrubbed); empty when it has none."""
        with self._sessions() as session:
            row = session.get(FrozenSetRow, alias)
            return [list(c) for c in row.conversations] if row is not None else []

    def frozen_set(self, alias: str) -> FrozenSet | None:
        with self._sessions() as session:
            row = session.get(FrozenSetRow, alias)
            if row is None:
                return None
            return FrozenSet(
                alias=row.alias,
                hash=row.hash,
                origin=row.origin,
                count=len(row.conversations),
                created_at=row.created_at,
            )

    def versions(self, alias: str | None = None) -> list[DatasetVersion]:
        with self._sessions() as session:
            query = select(DatasetVersionRow).order_by(
                DatasetVersionRow.alias, DatasetVersionRow.version
            )
            if alias is not None:
                query = query.where(DatasetVersionRow.alias == alias)
            return [DatasetVersion.model_validate(row) for row in session.scalars(query)]

    def get(self, alias: str, version: int) -> DatasetVersion:
        with self._sessions() as session:
            row = session.scalar(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.alias == alias, DatasetVersionRow.version == version
                )
            )
            if row is None:
                raise DatasetRegistryError(
                    "not_found", f"dataset {alias} v{version} does not exist"
                )
            return DatasetVersion.model_validate(row)

    def latest(self, alias: str) -> DatasetVersion | None:
        with self._sessions() as session:
            row = session.scalar(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.alias == alias)
                .order_by(DatasetVersionRow.version.desc())
                .limit(1)
            )
            return DatasetVersion.model_validate(row) if row is not None else None

    def candidates_of(self, alias: str, version: int) -> list[Candidate]:
        """The version's examples with their original sources, checked against its hash."""
        record = self.get(alias, version)
        path = Path(record.path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DatasetRegistryError("corrupt", f"{path} is missing") from exc
        candidates = []
        for line in text.splitlines():
            if line.strip():
                item = json.loads(line)
                candidates.append(Candidate(item["messages"], item.get("source", path.name)))
        if version_hash([c.conversation for c in candidates]) != record.hash:
            raise DatasetRegistryError("corrupt", f"{path} no longer matches {record.hash}")
        return candidates

    def conversations(self, alias: str, version: int) -> list[Conversation]:
        return [candidate.conversation for candidate in self.candidates_of(alias, version)]

    def diff(self, alias: str, a: int, b: int) -> dict[str, int | list[Any]]:
        """What changed from version ``a`` to ``b``, by input: counts of inputs added, removed,
        answered differently and unchanged, with a few examples of each change."""
        before = {input_key(c): c for c in self.conversations(alias, a)}
        after = {input_key(c): c for c in self.conversations(alias, b)}
        added = sorted(after.keys() - before.keys())
        removed = sorted(before.keys() - after.keys())
        common = sorted(before.keys() & after.keys())
        changed = [k for k in common if output_of(before[k]) != output_of(after[k])]
        return {
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "unchanged": len(common) - len(changed),
            "added_examples": [after[k] for k in added[:DIFF_EXAMPLES]],
            "removed_examples": [before[k] for k in removed[:DIFF_EXAMPLES]],
            "changed_examples": [
                {
                    "input": input_of(after[k]),
                    "before": output_of(before[k]),
                    "after": output_of(after[k]),
                }
                for k in changed[:DIFF_EXAMPLES]
            ],
        }

    def _by_hash(self, alias: str, digest: str) -> DatasetVersion | None:
        with self._sessions() as session:
            row = session.scalar(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.alias == alias, DatasetVersionRow.hash == digest
                )
            )
            return DatasetVersion.model_validate(row) if row is not None else None


def _frozen_row(alias: str, conversations: list[Conversation], *, origin: str) -> FrozenSetRow:
    return FrozenSetRow(
        alias=alias, hash=version_hash(conversations), origin=origin, conversations=conversations
    )


def _frozen_exists(alias: str) -> DatasetRegistryError:
    return DatasetRegistryError(
        "frozen_exists", f"{alias} already has a frozen test set; it is never changed"
    )


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items() if value)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
