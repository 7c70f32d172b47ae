"""Which rows of a Postgres source to read: those whose fingerprint the collection lacks.

The server computes an md5 of every source row; the collection keeps, per row, the
fingerprint of the source row it was made from, prefixed with the run's signature (the
template and id that shape the text). Rows whose fingerprint is stored are neither read nor
prepared; when nothing changed, the run reads no row at all and Ray is not started.
"""

from __future__ import annotations

import hashlib
import logging

from psycopg import sql

from extract.sources import SourcePlan
from vectorize.db import connect
from vectorize.store.collection import Collection
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)

# Past this share of changed rows one sharded read of everything beats a read by ids.
READ_ALL_ABOVE = 0.5


def source_signature(id_field: str, template: TextTemplate) -> str:
    return hashlib.sha256(f"{id_field}\x00{template.pattern}".encode()).hexdigest()[:12]


def plan_sql_reads(dsn: str, collection: Collection, source: SourcePlan, signature: str) -> tuple[dict[str, str], int]:
    """The source's ids with their fingerprints, and how many rows need no read. Sets
    ``source.only_ids`` where reading just the changed rows is the cheaper way."""
    fingerprints = source.sql.fingerprints()
    with connect(dsn, vector=False) as conn:
        stored = dict(
            conn.execute(
                sql.SQL("SELECT id, source_fingerprint FROM {t} WHERE chunk = 0").format(t=collection.table)
            ).fetchall()
        )
    changed = [key for key, digest in fingerprints.items() if stored.get(key) != f"{signature}:{digest}"]
    if len(changed) > READ_ALL_ABOVE * len(fingerprints):
        logger.info("%s of %s source rows are new or changed: reading all", len(changed), len(fingerprints))
        return fingerprints, 0
    logger.info("%s of %s source rows are new or changed: reading those", len(changed), len(fingerprints))
    source.only_ids = changed
    return fingerprints, len(fingerprints) - len(changed)
