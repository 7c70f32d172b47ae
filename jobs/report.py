"""``vectorize report``: check a collection, read its run history, write the page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jobs.check import check_collection
from vectorize.errors import ConfigError
from vectorize.quality.check_report import CheckReport
from vectorize.quality.report_page import render_page
from vectorize.quality.verdict import Limits
from vectorize.store.runs import run_history

logger = logging.getLogger(__name__)


def write_report(dsn: str, table: str, out: Path, limits: Limits | None = None, **check_options: Any) -> CheckReport:
    """The collection checked (``check_collection``'s options) and drawn into ``out``, one
    HTML file; the check's outcome."""
    if out.is_dir() or not out.parent.is_dir():
        raise ConfigError(f"--out {out}: give a file in a folder that exists")
    report = check_collection(dsn, table, limits, **check_options)
    out.write_text(render_page(report, run_history(dsn, table)), encoding="utf-8")
    logger.info("wrote %s", out)
    return report
