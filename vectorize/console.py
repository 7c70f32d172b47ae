"""What a command prints is vectorize's own: Ray's C++ core writes its log lines straight to the
process's stderr (a warning about actor constructor arguments on every run), and Ray's Python
prints worker deaths as ``(raylet) ...`` lines. While a command runs, file descriptors 1 and 2
go through filters that drop Ray's lines (kept with ``--debug``); with ``--json`` whatever else
is written to stdout goes to stderr, so that stdout holds exactly the one JSON object."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# "[2026-11-28 08:15:25,501 E 2987 2987] core_worker.cc:2465: ...", "(raylet) ..." (coloured or
# not) and Serve's "INFO 2026-11-28 11:39:46,629 serve 31759 -- Started Serve ..." lines
_RAY_LINE = re.compile(
    rb"^(\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] "
    rb"|(\x1b\[[\d;]*m)?\((raylet|gcs_server|autoscaler)[^)]*\)(\x1b\[[\d;]*m)? "
    rb"|INFO \d{4}-\d\d-\d\d [\d:,.]+ serve \d+ -- )"
)
_SEGMENT = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")

_original_stderr: int | None = None
_stderr_terminal: bool | None = None


class Console:
    """Where the command's own result goes: the stdout the process started with (or
    ``sys.stdout`` where that is not a file descriptor, as under a test's capture)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def print(self, text: str) -> None:
        if self.fd is None:
            print(text)
            return
        _write_all(self.fd, (text + "\n").encode())


def stderr_is_terminal() -> bool:
    """Whether the user's stderr is a terminal (the filter's pipe stands in for it meanwhile)."""
    return _stderr_terminal if _stderr_terminal is not None else sys.stderr.isatty()


def last_words(line: str) -> None:
    """Write ``line`` to the user's stderr from a process about to end with ``os._exit``, which
    would not wait for the filter to pass it on."""
    _write_all(_original_stderr if _original_stderr is not None else 2, (line + "\n").encode())


def _on_descriptors() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def own_output(*, json_mode: bool, show_ray: bool) -> Iterator[Console]:
    global _original_stderr, _stderr_terminal
    if not _on_descriptors():
        yield Console(None)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    _original_stderr, _stderr_terminal = saved_err, os.isatty(2)
    filters = []
    for fd, target in ((2, saved_err), (1, saved_err if json_mode else saved_out)):
        read_end, write_end = os.pipe()
        thread = threading.Thread(
            target=_forward, args=(read_end, target, show_ray), name=f"output-filter-{fd}", daemon=True
        )
        thread.start()
        filters.append(thread)
        os.dup2(write_end, fd)
        os.close(write_end)
    try:
        yield Console(saved_out)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)  # each pipe closes once no process holds its write end
        for thread in filters:
            thread.join(timeout=2)
        _original_stderr = _stderr_terminal = None


def _forward(read_end: int, target: int, show_ray: bool) -> None:
    """Copy the pipe to ``target`` segment by segment (a line, or a progress bar's ``\\r``
    update), leaving out Ray's lines; a target that is gone is drained all the same, so that no
    writer ever blocks on a full pipe."""
    pending = b""
    writable = True
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            chunk = b""
        data = pending + chunk
        segments = _SEGMENT.findall(data)
        pending = data[sum(map(len, segments)) :]
        if pending and (not chunk or not pending.startswith((b"[", b"("))):
            segments.append(pending)  # not the start of one of Ray's lines: no need to wait for its end
            pending = b""
        kept = b"".join(s for s in segments if show_ray or not _RAY_LINE.match(s))
        if kept and writable:
            try:
                _write_all(target, kept)
            except OSError:
                writable = False
        if not chunk:
            os.close(read_end)
            return


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
