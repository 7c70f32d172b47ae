"""Connections to Postgres + pgvector, with errors that say what to change."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vectorize.errors import DatabaseConfigError, StoreError, causes, ray_wrapper

logger = logging.getLogger(__name__)

_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, fit for a log line or an error message."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", dsn))


def _describe(exc: Exception, dsn: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact_dsn(text).replace(dsn, redact_dsn(dsn))


def connect(dsn: str, *, autocommit: bool = True, vector: bool = True, what: str = "Postgres at") -> psycopg.Connection:
    """Open a connection; with ``vector`` the pgvector types are registered on it. The one
    place a failed connection becomes an error: ``what`` names the database in its message."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.ProgrammingError as exc:
        raise DatabaseConfigError(f"bad DSN {redact_dsn(dsn)!r}: {_describe(exc, dsn)}") from None
    except psycopg.OperationalError as exc:
        raise DatabaseConfigError(f"cannot connect to {what} {redact_dsn(dsn)}: {_describe(exc, dsn)}") from None
    if vector:
        from pgvector.psycopg import register_vector

        try:
            register_vector(conn)
        except psycopg.ProgrammingError:
            conn.close()
            raise DatabaseConfigError(
                f"the database at {redact_dsn(dsn)} has no pgvector extension (CREATE EXTENSION vector)"
            ) from None
    return conn


_reused: dict[tuple[str, bool], psycopg.Connection] = {}


def reused_connection(dsn: str, *, vector: bool = False) -> psycopg.Connection:
    """This process's connection to ``dsn``, opened once and reused by the tasks a Ray worker runs
    one after another; a new one where the last was left inside a transaction or no longer
    answers (the server restarted since)."""
    conn = _reused.get((dsn, vector))
    if conn is not None and not conn.closed and not conn.broken:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.OperationalError:
                pass
        conn.close()
    conn = _reused[(dsn, vector)] = connect(dsn, vector=vector)
    return conn


@contextmanager
def using(where: str | psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A connection: ``where`` itself, or a new one to the DSN ``where``, closed after."""
    if isinstance(where, psycopg.Connection):
        yield where
    else:
        with connect(where, vector=False) as conn:
            yield conn


def register_vector_types(conn: psycopg.Connection) -> bool:
    """Register pgvector's types on ``conn`` where the extension exists; False where it does not
    yet (a database no job has written to)."""
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return False
    from pgvector.psycopg import register_vector

    register_vector(conn)
    return True


def ensure_vector_extension(conn: psycopg.Connection, dsn: str) -> None:
    """Create the ``vector`` extension when it is missing, or say clearly why it cannot be."""
    present = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    if present:
        return
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise DatabaseConfigError(
            f"pgvector is not enabled in {redact_dsn(dsn)} and this user may not enable it: "
            "ask an owner to run CREATE EXTENSION vector"
        ) from None
    except psycopg.Error as exc:
        raise DatabaseConfigError(
            f"cannot enable pgvector in {redact_dsn(dsn)}: {_describe(exc, dsn)} "
            "(is the pgvector extension installed on that server?)"
        ) from None
    logger.info("created the vector extension")


def connection_lost(exc: BaseException) -> bool:
    """A connection that broke or was closed by the server (not a deadlock, a cancelled query,
    a full disk: those are OperationalErrors too)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def lost_database(exc: BaseException, dsn: str) -> StoreError | None:
    """The run's failure as one line where the database is what failed under it: a lost or
    refused connection, found also inside a Ray error (its ``cause``)."""
    for seen in causes(exc, context=True):
        if ray_wrapper(seen):
            continue
        if isinstance(seen, StoreError):
            return seen
        if isinstance(seen, DatabaseConfigError) or connection_lost(seen):
            if isinstance(seen, psycopg.Error):
                detail = f"Postgres at {redact_dsn(dsn)}: {_describe(seen, dsn)}"
            else:
                detail = seen.message
            return StoreError(
                f"lost the database while the run was going ({detail}); what was written is kept: "
                "when it answers again, run the same command to finish the rest"
            )
    return None
