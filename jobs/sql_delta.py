"""Which rows of a Postgres source to read: those whose fingerprint the collection lacks.

The server computes a fingerprint of every source row; the collection keeps, per row, the
fingerprint of the source row it was made from, prefixed with the run's signature (the
template and id that shape the text). Rows whose fingerprint is stored are neither read nor
prepared.

Before that, a table source is asked for its state (row count and the sum of the rows'
``xmin``: any insert, update or delete changes it). When it equals the state the last
complete run recorded, with the same signature and the collection as that run left it,
nothing changed: the run reads no row and does not start Ray.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import psycopg

from extract.sources import SourcePlan
from vectorize.chunking import LongTextPolicy
from vectorize.db import using
from vectorize.store.collection import Collection
from vectorize.store.source_state import stored_fingerprints, unchanged_since_last_run
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)

# Past this share of changed rows one sharded read of everything beats a read by ids.
READ_ALL_ABOVE = 0.5


def source_signature(id_field: str, template: TextTemplate, long_text: LongTextPolicy) -> str:
    """What shapes the stored rows besides the source row: a change re-reads every row."""
    shape = f"{id_field}\x00{template.pattern}\x00{long_text.signature}"
    return hashlib.sha256(shape.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SqlReadPlan:
    rows: int  # in the source
    skipped: int  # whose fingerprint is stored: not read
    gone: list[str]  # ids the collection (or its errors table) holds and the source no longer has
    state: dict | None  # the source's state before the run, recorded if the run completes
    only_ids: list[str] | None = None  # read just these (the new and changed rows); None: read all


def plan_sql_reads(
    store: str | psycopg.Connection, collection: Collection, source: SourcePlan, signature: str, sync: bool
) -> SqlReadPlan:
    """What to read; ``only_ids`` where reading just the new and changed rows is the cheaper way."""
    table_state = source.sql.table_state()
    state = None
    if table_state is not None:
        state = {"source": source.display, "signature": signature, "rows": table_state[0], "xmin_sum": table_state[1]}
        with using(store) as conn:
            if unchanged_since_last_run(conn, collection, state, sync):
                logger.info("%s has not changed since the last run: nothing to read", source.display)
                return SqlReadPlan(table_state[0], table_state[0], [], None)
    fingerprints = source.sql.fingerprints()
    with using(store) as conn:
        stored, failed = stored_fingerprints(conn, collection)
    gone = [key for key in stored.keys() | failed if key not in fingerprints]
    changed = [key for key, digest in fingerprints.items() if stored.get(key) != f"{signature}:{digest}"]
    if len(changed) > READ_ALL_ABOVE * len(fingerprints):
        logger.info("%s of %s source rows are new or changed: reading all", len(changed), len(fingerprints))
        return SqlReadPlan(len(fingerprints), 0, gone, state)
    logger.info("%s of %s source rows are new or changed: reading those", len(changed), len(fingerprints))
    return SqlReadPlan(len(fingerprints), len(fingerprints) - len(changed), gone, state, changed)
