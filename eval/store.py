"""The evaluation store: samples, scores, feedback, rubrics, drift baselines and job leases.

Every method is synchronous and transactional (the gateway calls them from worker threads).
Rows leave as plain dicts whose keys match the gateway's wire models.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from eval.tables import (
    Base,
    BaselineRow,
    FeedbackRow,
    LeaseRow,
    RubricRow,
    SampleRow,
    ScoreRow,
    utcnow,
)

_SAMPLE_FIELDS = (
    "id", "request_id", "at", "alias", "version", "endpoint", "request", "response",
    "retrieved", "status", "latency_ms", "prompt_tokens", "completion_tokens",
)  # fmt: skip
_FEEDBACK_FIELDS = ("id", "at", "score", "label", "correction", "comment")
_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # ON CONFLICT dialects


@dataclass(frozen=True, slots=True)
class SampleQuery:
    alias: str | None = None
    version: str | None = None
    request_id: str | None = None
    score_below: float | None = None
    has_feedback: bool | None = None
    before: int | None = None  # sample id: page to older samples
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ScoredItem:
    """One score in a drift stream."""

    score_id: int
    version: str
    total: float | None
    checks: list[dict[str, Any]]


def _row(obj: Any, fields: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in fields}


class EvalStore:
    def __init__(self, engine: Engine) -> None:
        Base.metadata.create_all(engine)
        self._session = sessionmaker(engine, expire_on_commit=False)

    # --- samples and scores --------------------------------------------------------------------
    def add_sample(self, sample: dict[str, Any], score: dict[str, Any] | None) -> int:
        """Write a scrubbed sample and its score (``total``, ``checks``, ``epoch``) at once."""
        return self.add_samples([(sample, score)])[0]

    def add_samples(self, batch: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> list[int]:
        """Write samples with their scores in one transaction: all of them or none.

        Core ``executemany`` inserts, not ORM objects: this runs for every sampled request and
        the ORM's unit of work was most of the evaluation's cost under load.
        """
        if not batch:
            return []
        with self._session.begin() as session:
            ids = list(
                session.scalars(
                    insert(SampleRow).returning(SampleRow.id, sort_by_parameter_order=True),
                    [sample for sample, _ in batch],
                )
            )
            scores = [
                {"sample_id": sample_id, "alias": sample["alias"], "version": sample["version"],
                 "at": sample.get("at") or utcnow(), **score}
                for sample_id, (sample, score) in zip(ids, batch, strict=True)
                if score is not None
            ]  # fmt: skip
            if scores:
                session.execute(insert(ScoreRow), scores)
            return ids

    def sample(self, sample_id: int) -> dict[str, Any] | None:
        with self._session() as session:
            row = session.get(SampleRow, sample_id)
            return self._detail(session, [row])[0] if row is not None else None

    def samples(self, query: SampleQuery) -> list[dict[str, Any]]:
        """Newest first, filtered; each with its newest score and its feedback."""
        stmt = select(SampleRow).order_by(SampleRow.id.desc()).limit(query.limit)
        for column, value in (
            (SampleRow.alias, query.alias),
            (SampleRow.version, query.version),
            (SampleRow.request_id, query.request_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if query.before is not None:
            stmt = stmt.where(SampleRow.id < query.before)
        if query.score_below is not None:
            scored = select(ScoreRow.sample_id).where(ScoreRow.total < query.score_below)
            stmt = stmt.where(SampleRow.id.in_(scored))
        if query.has_feedback is not None:
            with_feedback = SampleRow.request_id.in_(select(FeedbackRow.request_id))
            stmt = stmt.where(with_feedback if query.has_feedback else ~with_feedback)
        with self._session() as session:
            return self._detail(session, list(session.scalars(stmt)))

    @staticmethod
    def _detail(session: Session, rows: list[SampleRow]) -> list[dict[str, Any]]:
        ids = [row.id for row in rows]
        scores: dict[int, ScoreRow] = {}
        for score in session.scalars(
            select(ScoreRow).where(ScoreRow.sample_id.in_(ids)).order_by(ScoreRow.id)
        ):
            scores[score.sample_id] = score  # the newest wins
        feedback: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in session.scalars(
            select(FeedbackRow)
            .where(FeedbackRow.request_id.in_([row.request_id for row in rows]))
            .order_by(FeedbackRow.id)
        ):
            feedback[item.request_id].append(_row(item, _FEEDBACK_FIELDS))
        out = []
        for row in rows:
            record = _row(row, _SAMPLE_FIELDS)
            score = scores.get(row.id)
            record["score"] = score.total if score else None
            record["epoch"] = score.epoch if score else None
            record["checks"] = score.checks if score else []
            record["feedback"] = feedback.get(row.request_id, [])
            out.append(record)
        return out

    def sampled_request(self, request_id: str) -> dict[str, Any] | None:
        """The newest sample of ``request_id``: alias, version; ``None`` when never sampled."""
        with self._session() as session:
            row = session.scalars(
                select(SampleRow)
                .where(SampleRow.request_id == request_id)
                .order_by(SampleRow.id.desc())
                .limit(1)
            ).first()
            return {"id": row.id, "alias": row.alias, "version": row.version} if row else None

    def scores_after(self, alias: str, epoch: str, after_score_id: int) -> list[ScoredItem]:
        """The drift stream of an alias under an epoch, oldest first."""
        stmt = (
            select(ScoreRow.id, ScoreRow.version, ScoreRow.total, ScoreRow.checks)
            .where(ScoreRow.alias == alias, ScoreRow.epoch == epoch)
            .where(ScoreRow.id > after_score_id)
            .order_by(ScoreRow.id)
        )
        with self._session() as session:
            return [ScoredItem(*row) for row in session.execute(stmt)]

    def last_score_id(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.max(ScoreRow.id))) or 0

    def score_groups(self, *, since: datetime) -> dict[tuple[str, str, str], list[ScoredItem]]:
        """Scores since ``since`` grouped by (alias, version, epoch), oldest first."""
        stmt = (
            select(ScoreRow.alias, ScoreRow.version, ScoreRow.epoch, ScoreRow.id,
                   ScoreRow.total, ScoreRow.checks, ScoreRow.at)
            .where(ScoreRow.at >= since)
            .order_by(ScoreRow.id)
        )  # fmt: skip
        groups: defaultdict[tuple[str, str, str], list[ScoredItem]] = defaultdict(list)
        with self._session() as session:
            for alias, version, epoch, score_id, total, checks, _at in session.execute(stmt):
                groups[(alias, version, epoch)].append(ScoredItem(score_id, version, total, checks))
        return dict(groups)

    def score_times(self, *, since: datetime) -> list[tuple[str, str, datetime, float]]:
        """(alias, version, at, total) of every scored sample since ``since``, oldest first."""
        stmt = (
            select(ScoreRow.alias, ScoreRow.version, ScoreRow.at, ScoreRow.total)
            .where(ScoreRow.at >= since, ScoreRow.total.is_not(None))
            .order_by(ScoreRow.id)
        )
        with self._session() as session:
            return [tuple(row) for row in session.execute(stmt)]  # type: ignore[misc]

    def sample_counts(self, *, since: datetime) -> dict[tuple[str, str], int]:
        stmt = (
            select(SampleRow.alias, SampleRow.version, func.count())
            .where(SampleRow.at >= since)
            .group_by(SampleRow.alias, SampleRow.version)
        )
        with self._session() as session:
            return {(a, v): n for a, v, n in session.execute(stmt)}

    # --- feedback ------------------------------------------------------------------------------
    def add_feedback(self, request_id: str, **fields: Any) -> dict[str, Any]:
        sampled = self.sampled_request(request_id)
        with self._session.begin() as session:
            row = FeedbackRow(
                request_id=request_id,
                sampled=sampled is not None,
                alias=fields.pop("alias", None) or (sampled or {}).get("alias"),
                version=fields.pop("version", None) or (sampled or {}).get("version"),
                **fields,
            )
            session.add(row)
            session.flush()
            return {"id": row.id, "request_id": request_id, "sampled": row.sampled,
                    "created_at": row.at, "alias": row.alias}  # fmt: skip

    def feedback_stats(self, *, since: datetime) -> dict[tuple[str, str], tuple[int, float | None]]:
        """(alias, version) -> (count, mean score of those that carry one)."""
        stmt = (
            select(
                FeedbackRow.alias, FeedbackRow.version, func.count(), func.avg(FeedbackRow.score)
            )
            .where(FeedbackRow.at >= since, FeedbackRow.alias.is_not(None))
            .group_by(FeedbackRow.alias, FeedbackRow.version)
        )
        with self._session() as session:
            return {(a, v or a): (n, mean) for a, v, n, mean in session.execute(stmt)}

    def corrections(self, alias: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Feedback carrying a correction for ``alias``, newest first, with its sample's request
        (scrubbed) when the request was sampled."""
        stmt = (
            select(FeedbackRow, SampleRow.request)
            .join(SampleRow, SampleRow.request_id == FeedbackRow.request_id, isouter=True)
            .where(FeedbackRow.alias == alias, FeedbackRow.correction.is_not(None))
            .order_by(FeedbackRow.id.desc())
            .limit(limit)
        )
        with self._session() as session:
            return [
                {"request_id": row.request_id, "correction": row.correction, "request": request}
                for row, request in session.execute(stmt)
            ]

    def confirmations(
        self, alias: str, *, min_score: float, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Sampled answers of ``alias`` a human confirmed: feedback with no correction and a
        score of at least ``min_score``, newest first, with the sample's request and answer."""
        stmt = (
            select(FeedbackRow.request_id, SampleRow.request, SampleRow.response)
            .join(SampleRow, SampleRow.request_id == FeedbackRow.request_id)
            .where(FeedbackRow.alias == alias, SampleRow.alias == alias)
            .where(FeedbackRow.correction.is_(None), FeedbackRow.score >= min_score)
            .order_by(FeedbackRow.id.desc())
            .limit(limit)
        )
        with self._session() as session:
            return [
                {"request_id": rid, "request": request, "response": response}
                for rid, request, response in session.execute(stmt)
            ]

    def good_samples(
        self, alias: str, *, epoch: str, min_score: float, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Sampled answers of ``alias`` that scored at least ``min_score`` under ``epoch``."""
        stmt = (
            select(
                SampleRow.request_id,
                SampleRow.request,
                SampleRow.response,
                ScoreRow.total,
                ScoreRow.checks,
            )
            .join(ScoreRow, ScoreRow.sample_id == SampleRow.id)
            .where(SampleRow.alias == alias, ScoreRow.epoch == epoch)
            .where(ScoreRow.total >= min_score)
            .order_by(SampleRow.id.desc())
            .limit(limit)
        )
        with self._session() as session:
            return [
                {
                    "request_id": rid,
                    "request": request,
                    "response": response,
                    "score": total,
                    "checks": checks or [],
                }
                for rid, request, response, total, checks in session.execute(stmt)
            ]

    def version_scores(
        self, alias: str, version: str, *, epoch: str, after_id: int = 0
    ) -> list[float]:
        """Totals of ``alias`` served by ``version`` under ``epoch``, with score ids above
        ``after_id``, oldest first (a canary's live scores)."""
        stmt = (
            select(ScoreRow.total)
            .where(ScoreRow.alias == alias, ScoreRow.version == version, ScoreRow.epoch == epoch)
            .where(ScoreRow.id > after_id, ScoreRow.total.is_not(None))
            .order_by(ScoreRow.id)
        )
        with self._session() as session:
            return list(session.scalars(stmt))

    # --- rubrics -------------------------------------------------------------------------------
    def put_rubric(self, alias: str, body: dict[str, Any], epoch: str) -> dict[str, Any]:
        """Store the next rubric version of ``alias``."""
        with self._session.begin() as session:
            latest = session.scalar(
                select(func.max(RubricRow.version)).where(RubricRow.alias == alias)
            )
            row = RubricRow(alias=alias, version=(latest or 0) + 1, epoch=epoch, body=body)
            session.add(row)
            session.flush()
            return self._rubric(row)

    def rubrics(self) -> list[dict[str, Any]]:
        """The rubric in force for each alias."""
        newest = (
            select(RubricRow.alias, func.max(RubricRow.version).label("version"))
            .group_by(RubricRow.alias)
            .subquery()
        )
        stmt = select(RubricRow).join(
            newest, (RubricRow.alias == newest.c.alias) & (RubricRow.version == newest.c.version)
        )
        with self._session() as session:
            return [self._rubric(row) for row in session.scalars(stmt)]

    @staticmethod
    def _rubric(row: RubricRow) -> dict[str, Any]:
        return {"alias": row.alias, "version": row.version, "epoch": row.epoch,
                "rubric": row.body, "created_at": row.created_at}  # fmt: skip

    # --- drift baselines -----------------------------------------------------------------------
    def baseline(self, alias: str, epoch: str) -> dict[str, Any]:
        """The baseline in force for (alias, epoch), started now when there is none."""
        with self._session.begin() as session:
            row = session.scalars(
                select(BaselineRow)
                .where(BaselineRow.alias == alias, BaselineRow.epoch == epoch)
                .order_by(BaselineRow.id.desc())
                .limit(1)
            ).first()
            if row is None:
                row = BaselineRow(alias=alias, epoch=epoch, after_score_id=0, reason="epoch")
                session.add(row)
                session.flush()
            return _row(row, ("id", "alias", "epoch", "after_score_id", "reason", "stats",
                              "state", "statistic", "created_at"))  # fmt: skip

    def restart_baseline(self, alias: str, epoch: str, *, reason: str) -> int:
        """Start a new baseline: only scores written from now on count."""
        after = self.last_score_id()
        with self._session.begin() as session:
            row = BaselineRow(alias=alias, epoch=epoch, after_score_id=after, reason=reason)
            session.add(row)
            session.flush()
            return row.id

    def update_baseline(self, baseline_id: int, **values: Any) -> None:
        """Record the frozen stats, or the latest state and statistic."""
        with self._session.begin() as session:
            session.execute(
                update(BaselineRow).where(BaselineRow.id == baseline_id).values(**values)
            )

    # --- retention and leases ------------------------------------------------------------------
    def delete_before(self, cutoff: datetime) -> dict[str, int]:
        """Drop samples (with their scores) and feedback older than ``cutoff``."""
        with self._session.begin() as session:
            old = select(SampleRow.id).where(SampleRow.at < cutoff)
            scores = session.execute(delete(ScoreRow).where(ScoreRow.sample_id.in_(old)))
            samples = session.execute(delete(SampleRow).where(SampleRow.at < cutoff))
            feedback = session.execute(delete(FeedbackRow).where(FeedbackRow.at < cutoff))
            return {"samples": samples.rowcount, "scores": scores.rowcount,
                    "feedback": feedback.rowcount}  # fmt: skip

    def try_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        """Hold the lease ``name`` for ``ttl`` seconds when it is free, expired or ours."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        with self._session.begin() as session:
            taken = session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name)
                .where((LeaseRow.holder == holder) | (LeaseRow.expires_at < now))
                .values(holder=holder, expires_at=expires)
            )
            if taken.rowcount:
                return True
        values = {"name": name, "holder": holder, "expires_at": expires}
        try:
            with self._session.begin() as session:
                dialect = session.get_bind().dialect.name
                if dialect in _UPSERT:  # no failed INSERT (an ERROR in PostgreSQL's log) per try
                    statement = _UPSERT[dialect](LeaseRow).values(**values).on_conflict_do_nothing()
                    return session.execute(statement.returning(LeaseRow.name)).first() is not None
                session.execute(insert(LeaseRow).values(**values))
            return True
        except IntegrityError:
            return False  # another process holds it


__all__ = ["EvalStore", "SampleQuery", "ScoredItem"]
