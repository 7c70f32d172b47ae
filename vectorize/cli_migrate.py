"""``vectorize migrate``: move a collection to another model or storage without a moment in
which it cannot be searched; roll back, free the old version, show progress."""

from __future__ import annotations

import argparse
import json

from vectorize.console import own_output
from vectorize.errors import ConfigError
from vectorize.run_options import add_run_options, run_settings

ACTIONS = ("status", "rollback", "drop_previous", "abort")


def add_migrate_command(commands) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="build a collection's vectors with another model (or storage) beside it, then swap them in",
        description="vectorize migrate SOURCE --table T --model NEW [the options of run]: the collection keeps "
        "answering searches with its model until the new version covers the source, then one transaction swaps "
        "it in and keeps the old one (--rollback, --drop-previous).",
    )
    add_run_options(migrate, source_required=False)
    steps = migrate.add_argument_group("migration")
    steps.add_argument("--min-coverage", type=float, default=1.0,
                       help="swap once this share of the source's ids is stored (default 1: all)")  # fmt: skip
    actions = steps.add_mutually_exclusive_group()
    actions.add_argument("--status", action="store_true", help="show each version and the migration's progress")
    actions.add_argument("--rollback", action="store_true", help="swap the previous version back in")
    actions.add_argument("--drop-previous", action="store_true", help="free the version the last swap replaced")
    actions.add_argument("--abort", action="store_true", help="drop the migration in progress")


def run_migrate(args: argparse.Namespace) -> int:
    """The command; a database error on any of its steps is one line (each step is one
    transaction, so a failed one leaves the versions as they were)."""
    import psycopg

    from vectorize.errors import StoreError
    from vectorize.store.runs import plain_error

    try:
        return _migrate_command(args)
    except psycopg.Error as exc:
        raise StoreError(
            f"the database failed during the migration ({plain_error(exc)}); the step that "
            "failed changed nothing: run the same command again"
        ) from exc


def _migrate_command(args: argparse.Namespace) -> int:
    from vectorize.embedded_pg import database_dsn

    action = next((name for name in ACTIONS if getattr(args, name)), None)
    table = getattr(args, "table", None)
    if not table:
        raise ConfigError("--table is required: the collection to migrate")
    if action is None:
        return _build(args)
    if args.source is not None:
        raise ConfigError(f"--{action.replace('_', '-')} takes no SOURCE: give only --table")
    dsn = database_dsn(getattr(args, "dsn", None), getattr(args, "data_dir", None))
    if action == "status":
        from jobs.migration_status import migration_status

        status = migration_status(dsn, table)
        print(json.dumps(status.to_dict(), sort_keys=True) if args.json else status.render())
        return 0
    from jobs import migrate

    line = {"rollback": migrate.roll_back, "drop_previous": migrate.drop_previous, "abort": migrate.abort}[action](
        dsn, table
    )
    print(json.dumps({"collection": table, "done": action, "message": line}) if args.json else f"vectorize: {line}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from jobs.migrate import migrate

    if args.source is None:
        raise ConfigError("give the SOURCE to build the new version from (or --status, --rollback, "
                          "--drop-previous, --abort)")  # fmt: skip
    settings = run_settings(args)
    with own_output(json_mode=args.json, show_ray=args.debug) as console:
        report = migrate(settings, args.min_coverage)
        console.print(json.dumps(report.to_dict(), sort_keys=True) if args.json else report.render())
    return 0 if report.swapped else 1
