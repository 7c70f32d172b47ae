"""What a command prints is vectorize's own: Ray's C++ core writes its log lines straight to the
process's stderr (a warning about actor constructor arguments on every run), and Ray's Python
prints worker deaths to stdout. While a command runs, file descriptors 1 and 2 go through a
filter that drops Ray's lines (kept with ``--debug``), and with ``--json`` anything else
written to stdout goes to stderr, so that stdout holds exactly the one JSON object."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Ray's core log lines, "[2026-11-28 08:15:25,501 E 2987 2987] core_worker.cc:2465: ...", and
# the lines Ray's Python prefixes with the process they are about, "(raylet) ...".
_RAY_LINE = re.compile(rb"^(\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] |\((raylet|gcs_server|autoscaler)[^)]*\) )")


class Console:
    """Where the command's own result goes: the stdout the process started with (or
    ``sys.stdout`` where that is not a file descriptor, as under a test's capture)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def print(self, text: str) -> None:
        if self.fd is None:
            print(text)
            return
        data = (text + "\n").encode()
        while data:
            data = data[os.write(self.fd, data) :]


def _on_descriptors() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def own_output(*, json_mode: bool, show_ray: bool) -> Iterator[Console]:
    if not _on_descriptors():
        yield Console(None)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    filters = threading.Thread(
        target=_forward, args=(read_end, saved_err, show_ray), name="ray-output-filter", daemon=True
    )
    filters.start()
    os.dup2(write_end, 2)
    if json_mode:
        os.dup2(write_end, 1)
    os.close(write_end)
    try:
        yield Console(saved_out)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)  # the pipe closes once no process holds its write end
        filters.join(timeout=2)


def _forward(read_end: int, target: int, show_ray: bool) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            chunk = b""
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop() if chunk else b""
        kept = [line for line in lines if show_ray or not _RAY_LINE.match(line)]
        if kept:
            data = b"\n".join(kept) + (b"\n" if chunk or pending else b"")
            try:
                while data:
                    data = data[os.write(target, data) :]
            except OSError:
                return
        if not chunk:
            os.close(read_end)
            return
