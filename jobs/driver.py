"""The driver of a run in this process: the run itself, or (``--dry-run``) what it would do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vectorize.settings import RunSettings
from vectorize.summary import RunSummary

if TYPE_CHECKING:
    from jobs.dry_run import DryRunReport
    from jobs.plan import RunPlan


def drive_here(settings: RunSettings, plan: RunPlan | None = None) -> RunSummary | DryRunReport:
    if settings.runtime.dry_run:
        from jobs.dry_run import dry_run_here

        return dry_run_here(settings)
    from jobs.runner import run_here

    return run_here(settings, plan)
