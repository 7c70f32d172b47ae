"""A collection's figures, measured in Postgres: every row is looked at by the server, in a
few scans, so that a table far larger than this machine's memory is checked as easily."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from psycopg import sql

from vectorize.identity import ModelIdentity
from vectorize.store.collection import Collection

logger = logging.getLogger(__name__)

NORM_BINS = 40
# How far off the model's normal a norm must be to be flagged: for a normalising model, off 1.0
# by more than this; for another, more than this many standard deviations off the mean.
DEFAULT_NORM_TOLERANCE = 0.01
DEFAULT_NORM_SIGMAS = 4.0


@dataclass
class TableFigures:
    rows: int
    column_type: str
    wrong_dims: int
    zero: int
    non_finite: int
    norm_mean: float
    norm_std: float
    norm_min: float
    norm_max: float
    off_norm: int
    norm_range: tuple[float, float]  # norms inside it are normal
    duplicate_vector_groups: int  # one vector stored for several different texts
    duplicate_vector_rows: int
    identical_text_groups: int  # one text stored under several ids
    identical_text_rows: int
    models: dict[str, int]  # model identity -> rows
    other_model: int  # rows of another model identity than the collection's
    errors_by_reason: dict[str, int]
    missing_by_reason: dict[str, int]  # errors without a stored vector, and rows pending reuse
    norm_histogram: tuple[list[float], list[int]] = field(default_factory=lambda: ([], []))

    @property
    def missing(self) -> int:
        return sum(self.missing_by_reason.values())


def measure(
    conn,
    collection: Collection,
    identity: ModelIdentity,
    *,
    norm_tolerance: float = DEFAULT_NORM_TOLERANCE,
    norm_sigmas: float = DEFAULT_NORM_SIGMAS,
) -> TableFigures:
    t = collection.table
    first = conn.execute(
        sql.SQL(
            """SELECT count(*),
                      count(*) FILTER (WHERE vector_dims(embedding) <> %(dims)s),
                      count(*) FILTER (WHERE norm = 0),
                      count(*) FILTER (WHERE NOT norm < 'Infinity'::float8),
                      avg(norm) FILTER (WHERE norm < 'Infinity'::float8),
                      stddev_pop(norm) FILTER (WHERE norm < 'Infinity'::float8),
                      min(norm), max(norm)
               FROM (SELECT embedding, vector_norm(embedding::vector) AS norm FROM {t}) stored"""
        ).format(t=t),
        {"dims": identity.dimensions},
    ).fetchone()
    rows, wrong_dims, zero, non_finite, mean, std, low, high = first
    mean, std = float(mean or 0.0), float(std or 0.0)
    if identity.normalized:
        norm_range = (1.0 - norm_tolerance, 1.0 + norm_tolerance)
    else:
        norm_range = (mean - norm_sigmas * std, mean + norm_sigmas * std)
    histogram, off_norm = _norms_by_bin(
        conn, collection, (max(0.0, min(float(low or 0.0), norm_range[0])), max(float(high or 0.0), norm_range[1])),
        norm_range,
    )  # fmt: skip
    dup_groups, dup_rows = conn.execute(
        sql.SQL(
            """SELECT count(*), coalesce(sum(n), 0) FROM (
                 SELECT count(*) AS n FROM {t} WHERE vector_norm(embedding::vector) > 0
                 GROUP BY embedding HAVING count(DISTINCT text_sha256) > 1) g"""
        ).format(t=t)
    ).fetchone()
    same_groups, same_rows = conn.execute(
        sql.SQL(
            """SELECT count(*), coalesce(sum(n), 0) FROM (
                 SELECT count(DISTINCT id) AS n FROM {t} GROUP BY text_sha256 HAVING count(DISTINCT id) > 1) g"""
        ).format(t=t)
    ).fetchone()
    models = dict(conn.execute(sql.SQL("SELECT model, count(*) FROM {t} GROUP BY model").format(t=t)).fetchall())
    return TableFigures(
        rows=rows,
        column_type=_column_type(conn, collection),
        wrong_dims=wrong_dims,
        zero=zero,
        non_finite=non_finite,
        norm_mean=mean,
        norm_std=std,
        norm_min=float(low or 0.0),
        norm_max=float(high or 0.0),
        off_norm=off_norm,
        norm_range=norm_range,
        duplicate_vector_groups=dup_groups,
        duplicate_vector_rows=int(dup_rows),
        identical_text_groups=same_groups,
        identical_text_rows=int(same_rows),
        models=models,
        other_model=sum(n for key, n in models.items() if key != identity.key),
        errors_by_reason=_errors_by_reason(conn, collection, stored_only=False),
        missing_by_reason=_missing(conn, collection),
        norm_histogram=histogram,
    )


def _column_type(conn, collection: Collection) -> str:
    return conn.execute(
        """SELECT format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = to_regclass(%s) AND attname = 'embedding'""",
        (collection.regclass(),),
    ).fetchone()[0]


def _errors_by_reason(conn, collection: Collection, *, stored_only: bool) -> dict[str, int]:
    condition = (
        sql.SQL("WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE t.id = e.id AND t.chunk = e.chunk)").format(
            t=collection.table
        )
        if stored_only
        else sql.SQL("")
    )
    found = conn.execute(
        sql.SQL("SELECT reason, count(*) FROM {e} e {condition} GROUP BY reason ORDER BY reason").format(
            e=collection.errors, condition=condition
        )
    ).fetchall()
    return dict(found)


def _missing(conn, collection: Collection) -> dict[str, int]:
    """Source rows without a vector: failed ones (by reason) and ones an unfinished run left
    waiting to reuse a vector."""
    missing = _errors_by_reason(conn, collection, stored_only=True)
    pending = conn.execute(
        sql.SQL(
            """SELECT count(*) FROM (SELECT DISTINCT id, chunk FROM {p} p
               WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE t.id = p.id AND t.chunk = p.chunk)) w"""
        ).format(p=collection.pending, t=collection.table)
    ).fetchone()[0]
    if pending:
        missing["pending_reuse"] = pending
    return missing


def _norms_by_bin(
    conn, collection: Collection, bounds: tuple[float, float], normal: tuple[float, float]
) -> tuple[tuple[list[float], list[int]], int]:
    """In one scan: counts of norms in NORM_BINS equal bins over ``bounds`` (the smallest and
    largest norm, widened to the normal range, so that a normalised model's shows one bar at
    1.0, not float noise), as the bins' left edges and their counts; and how many non-zero
    norms lie outside ``normal``."""
    low, high = bounds
    if high <= low:
        high = low + 1e-6
    found = conn.execute(
        sql.SQL(
            """SELECT least(width_bucket(n, %(low)s, %(high)s, %(bins)s), %(bins)s) AS bin, count(*),
                      count(*) FILTER (WHERE n > 0 AND (n < %(lo)s OR n > %(hi)s))
               FROM (SELECT vector_norm(embedding::vector) AS n FROM {t}) norms
               WHERE n < 'Infinity'::float8 GROUP BY bin"""
        ).format(t=collection.table),
        {"low": low, "high": high, "bins": NORM_BINS, "lo": normal[0], "hi": normal[1]},
    ).fetchall()
    counts = {bin_: n for bin_, n, _ in found}
    width = (high - low) / NORM_BINS
    edges = [low + i * width for i in range(NORM_BINS)]
    return (edges, [int(counts.get(i + 1, 0)) for i in range(NORM_BINS)]), sum(off for _, _, off in found)
