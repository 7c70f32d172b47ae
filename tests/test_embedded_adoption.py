"""The embedded Postgres of a process killed outright is adopted by the next one, which stops it
on exit: no server is left running for good. Only the processes this test starts are touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.corpus import ROOT

START = "import sys, time; from vectorize.embedded_pg import start_embedded_postgres as s; s(sys.argv[1])"


def _postmaster(pgdata) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split(") ")[1][0] != "Z"


@pytest.mark.slow
def test_the_server_of_a_killed_process_is_adopted_and_stopped(tmp_path):
    killed = subprocess.Popen(
        [sys.executable, "-c", START + "; print('up', flush=True); time.sleep(600)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    postmaster = None
    try:
        assert killed.stdout.readline().strip() == "up"
        postmaster = _postmaster(tmp_path / "pgdata")
        assert postmaster and _running(postmaster)
    finally:
        os.kill(killed.pid, signal.SIGKILL)  # the process alone, as a killed driver
        killed.wait()
    try:
        assert _running(postmaster), "the server went with the killed process: nothing to adopt"
        subprocess.run([sys.executable, "-c", START, str(tmp_path)], cwd=ROOT, check=True, timeout=120)
        deadline = time.monotonic() + 30
        while _running(postmaster):
            assert time.monotonic() < deadline, "the adopted server still runs after its adopter exited"
            time.sleep(0.2)
    finally:
        if postmaster and _running(postmaster):
            os.kill(postmaster, signal.SIGKILL)
