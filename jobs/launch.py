"""Where a run's driver runs: here, or, given ``ray://HEAD:10001``, as a task on the cluster's
head (``jobs/client_run.py``); a database that goes away under it is one :class:`StoreError`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import psycopg

from vectorize.db import lost_database
from vectorize.embedded_pg import given_dsn
from vectorize.settings import RunSettings
from vectorize.summary import RunSummary

if TYPE_CHECKING:
    from jobs.dry_run import DryRunReport
    from jobs.plan import RunPlan


def run_job(settings: RunSettings, plan: RunPlan | None = None) -> RunSummary | DryRunReport:
    """``plan``: the run planned already from ``settings`` by the caller, for a driver here (a
    driver on the cluster plans its own)."""
    try:
        address = settings.runtime.ray_address or os.environ.get("RAY_ADDRESS") or ""
        if address.startswith("ray://"):
            from jobs.client_run import run_through_client

            return run_through_client(settings, address)
        from jobs.driver import drive_here

        return drive_here(settings, plan)
    except psycopg.OperationalError as exc:
        lost = lost_database(exc, given_dsn(settings.target.dsn) or "the embedded server")
        if lost is None:  # a failed statement (a deadlock, a full disk), not a lost connection
            raise
        raise lost from exc
