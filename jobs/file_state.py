"""Whether a file source changed since the last complete run, known without reading its rows.

A file source's state is each file's path, size and SHA-256. When it equals the state the last
complete run recorded, with the same signature and the collection as that run left it (the
same stored rows, no error row a rerun retries), nothing changed: the run reads no row and does
not start Ray. Any other run reads every row, as before, and records the state when it
completes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import psycopg

from extract.sources import SourcePlan
from vectorize.errors import SourceError
from vectorize.store.collection import Collection
from vectorize.store.source_state import recorded_source_state, unchanged_since_last_run

logger = logging.getLogger(__name__)

FILE_KINDS = ("json", "csv", "parquet", "jira", "github")


@dataclass(frozen=True)
class FileReadPlan:
    state: dict | None  # the files' state before the run, recorded if it completes; None: nothing to read
    unchanged_rows: int = 0  # where the files are as the last complete run read them: its rows stored...
    failed_by_reason: dict[str, int] = field(default_factory=dict)  # ...and its error rows, which stand


def recorded_files_state(state: dict, rows_read: int, failed_by_reason: dict[str, int]) -> dict:
    """What a complete run records of the files: their state, the rows it read and those that failed."""
    return {**state, "rows": rows_read, "failed_by_reason": failed_by_reason}


def files_state(source: SourcePlan, signature: str) -> dict:
    files = []
    for path in source.paths:
        try:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            files.append([path, os.path.getsize(path), digest])
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {"source": source.display, "signature": signature, "files": files}


def plan_file_reads(conn: psycopg.Connection, collection: Collection, source: SourcePlan, signature: str,
                    sync: bool) -> FileReadPlan:  # fmt: skip
    """Nothing to read where the files and the collection are as the last complete run left them."""
    state = files_state(source, signature)
    if unchanged_since_last_run(conn, collection, state, sync):
        recorded = recorded_source_state(conn, collection)
        rows, failed = recorded.get("rows"), recorded.get("failed_by_reason")
        if isinstance(rows, int) and isinstance(failed, dict):
            logger.info("%s has not changed since the last run: nothing to read", source.display)
            return FileReadPlan(None, rows - sum(failed.values()), failed)
    return FileReadPlan(state)
