"""The replica's own log lines: each record of vectorize's loggers as one line in the replica's
Serve log, written at once.

Without this, a replica's records have no handler: Python's last-resort handler writes them,
traceback and all, to ``sys.stderr``, which Serve turns into its logger at INFO, piece by piece,
and buffers until a thousand records have gathered. The traceback of a failure is in the log
only with ``VECTORIZE_DEBUG=1`` in the replica's environment (``vectorize serve --debug``).
"""

from __future__ import annotations

import logging
import os

SERVE_LOGGER = "ray.serve"  # Serve's own logger, whose handlers write the replica's log file
OUR_LOGGERS = ("serve", "vectorize")


def one_line(record: logging.LogRecord) -> str:
    """The record's message with its exception, if any, as ``Type: first line``."""
    message = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text = str(exc).strip()
        message = f"{message}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    return " ".join(message.split())


class ToServeLog(logging.Handler):
    """Hands each record to Serve's logger as one line; warnings and errors are flushed at once."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger(SERVE_LOGGER)
        line = logging.makeLogRecord(record.__dict__)
        line.msg, line.args = one_line(record), None
        if not self.debug:
            line.exc_info, line.exc_text, line.stack_info = None, None, None
        target.handle(line)
        if record.levelno >= logging.WARNING:
            for handler in target.handlers:
                handler.flush()


def log_to_replica_file() -> None:
    """Send vectorize's records in this replica to the replica's Serve log."""
    debug = os.environ.get("VECTORIZE_DEBUG") == "1"
    for name in OUR_LOGGERS:
        ours = logging.getLogger(name)
        ours.handlers = [ToServeLog(debug)]
        ours.setLevel(logging.DEBUG if debug else logging.INFO)
        ours.propagate = False
