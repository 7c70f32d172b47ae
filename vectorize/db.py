"""Connections to Postgres + pgvector, with errors that say what to change."""

from __future__ import annotations

import logging
import re
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vectorize.errors import DatabaseConfigError, StoreError, causes, ray_wrapper

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10

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
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
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
            raise _no_pgvector(dsn) from None
    return conn


_reused: dict[str, psycopg.Connection] = {}


def reused_connection(dsn: str, *, vector: bool = False) -> psycopg.Connection:
    """This process's connection to ``dsn``, opened once and reused by the tasks a Ray worker runs
    one after another (one per database, whatever the tasks); a new one where the last was left
    inside a transaction or no longer answers (its server restarted). A server that holds the
    connection without answering is an error after as long as a new connection may take. With
    ``vector`` the pgvector types are registered on it."""
    conn = _reused.get(dsn)
    if conn is not None and not _answers(conn, dsn):
        conn.close()
        conn = None
    if conn is None:
        conn = _reused[dsn] = connect(dsn, vector=vector)
    elif vector and conn.adapters.types.get("vector") is None and not register_vector_types(conn):
        raise _no_pgvector(dsn)
    return conn


def _no_pgvector(dsn: str) -> DatabaseConfigError:
    return DatabaseConfigError(f"the database at {redact_dsn(dsn)} has no pgvector extension (CREATE EXTENSION vector)")


def _answers(conn: psycopg.Connection, dsn: str) -> bool:
    """Whether the idle ``conn`` answers ``SELECT 1`` (False where the server closed it); a
    DatabaseConfigError where no answer comes within CONNECT_TIMEOUT_S (a frozen server)."""
    if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    pgconn, deadline = conn.pgconn, time.monotonic() + CONNECT_TIMEOUT_S
    try:
        pgconn.send_query(b"SELECT 1")
        while pgconn.flush():
            _wait_for(pgconn.socket, deadline, dsn, write=True)
        pgconn.consume_input()
        while pgconn.is_busy():
            _wait_for(pgconn.socket, deadline, dsn)
            pgconn.consume_input()
        answered = True
        while (result := pgconn.get_result()) is not None:
            answered = answered and result.status == psycopg.pq.ExecStatus.TUPLES_OK
        return answered
    except psycopg.OperationalError:
        return False
    except DatabaseConfigError:
        conn.close()
        raise


def _wait_for(sock: int, deadline: float, dsn: str, *, write: bool = False) -> None:
    left = max(deadline - time.monotonic(), 0)
    if not any(select.select([] if write else [sock], [sock] if write else [], [], left)):
        raise DatabaseConfigError(
            f"cannot connect to Postgres at {redact_dsn(dsn)}: it did not answer in {CONNECT_TIMEOUT_S} s"
        )


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
