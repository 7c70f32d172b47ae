"""``vectorize migrate``: a collection moved to another model (or other storage) while it keeps
answering searches with the one it has.

The new model's vectors are built by an ordinary run into the collection's next version
(``vectorize.store.versions``), with every rule of a run: what it holds already is skipped, bad
rows go to its errors table, a killed build is resumed by running the same command again. Once
it covers the source, one transaction swaps it in and keeps the version it replaced.
A storage change with the same model copies the stored vectors over instead of embedding them
again; vectors are never copied between models.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

from vectorize.db import connect
from vectorize.embedded_pg import database_dsn
from vectorize.errors import ConfigError, MigrationError, UnknownCollectionError
from vectorize.identity import ModelIdentity
from vectorize.settings import RunSettings
from vectorize.store.collection import NEXT_SCHEMA, PREVIOUS_SCHEMA, Collection
from vectorize.store.registry import Registered
from vectorize.store.storage import Storage, StorageRequest, storage_for
from vectorize.store.versions import VersionFigures, Versions, read_versions, version_figures
from vectorize.summary import RunSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationReport:
    collection: str
    from_model: str
    to_model: str
    build: RunSummary
    figures: VersionFigures
    min_coverage: float
    swapped: bool
    copied: int = 0  # rows whose vectors were copied from the live version (same model)
    waiting: int = 0  # rows still in Batch API batches: not swapped until they are collected

    def to_dict(self) -> dict:
        return {
            "collection": self.collection,
            "from_model": self.from_model,
            "to_model": self.to_model,
            "swapped": self.swapped,
            "coverage": round(self.figures.coverage, 6),
            "min_coverage": self.min_coverage,
            "rows": self.figures.rows,
            "ids": self.figures.ids,
            "failed_ids": self.figures.failed_ids,
            "source_failed_ids": self.figures.source_failed_ids,
            "copied": self.copied,
            "waiting": self.waiting,
            "build": self.build.to_dict(),
        }

    def render(self) -> str:
        name, figures = self.collection, self.figures
        lines = [replace(self.build, collection=f"{name}, its next version").render(), ""]
        if self.copied:
            lines.append(f"copied       {self.copied} vectors of the same model from the live version")
        if self.waiting:
            lines.append(
                f"not swapped  {self.waiting} rows still wait in Batch API batches: run the same command again "
                "to collect them (it swaps once every row is stored or failed)"
            )
        elif self.swapped:
            lines.append(
                f"swapped      collection {name!r} now answers with {self.to_model} ({figures.rows} rows"
                + (
                    f"; {figures.source_failed_ids} ids the source cannot give stay error rows, as in every run"
                    if figures.source_failed_ids
                    else ""
                )
                + "); "
                f"its {self.from_model} version is kept: `vectorize migrate --table {name} --rollback` goes "
                "back to it, --drop-previous frees it"
            )
        else:
            lines.append(
                f"not swapped  the new version covers {figures.coverage:.2%} of the source's ids "
                f"({figures.failed_ids} failed, in {name}'s next errors table), under --min-coverage "
                f"{self.min_coverage:g}: run the same command again to retry them, or lower --min-coverage"
            )
        return "\n".join(lines)


def _live_or_refuse(versions: Versions, name: str) -> Registered:
    if versions.live is None:
        raise UnknownCollectionError(
            f"no collection {name!r} in this database: `vectorize run ... --table {name}` makes one"
        )
    return versions.live


def _storage_request(asked: StorageRequest, live: Storage, dimensions: int, name: str) -> StorageRequest:
    """What the new version is stored as: the options given, the live version's for the rest,
    except a vector type and index that do not fit the new model's dimensions (then the default
    a new collection of that model gets)."""
    given = asdict(asked)
    inherited = StorageRequest(**{key: getattr(live, key) if value is None else value for key, value in given.items()})
    try:
        storage_for(inherited, None, dimensions, name)
    except ConfigError:
        return replace(inherited, vector_type=asked.vector_type, index=asked.index)
    return inherited


def _describe(identity: ModelIdentity, storage: Storage) -> str:
    return (f"{identity.name} ({identity.dimensions} dims, {storage.vector_type}, index {storage.index}, "
            f"{storage.keyword_index})")  # fmt: skip


def check_migration(versions: Versions, name: str, identity: ModelIdentity, storage: Storage) -> None:
    """Refuse, before any work, a migration to what the collection has, one that would clash with
    a migration in progress, or one whose swap would have to drop a previous version."""
    live = _live_or_refuse(versions, name)
    if live.identity.same_model(identity) and live.storage == storage:
        raise MigrationError(
            f"collection {name!r} already holds vectors of {_describe(identity, storage)}: nothing to migrate; "
            "give another --model or other storage options"
        )
    building = versions.next
    if building is not None and (not building.identity.same_model(identity) or building.storage != storage):
        raise MigrationError(
            f"collection {name!r} has a migration to {_describe(building.identity, building.storage)} in progress: "
            f"finish it with the same --model and options, or drop it with `vectorize migrate --table {name} --abort`"
        )
    if versions.previous is not None:
        raise MigrationError(
            f"collection {name!r} keeps its previous version ({versions.previous.identity.name}) from the last "
            f"migration: free it with `vectorize migrate --table {name} --drop-previous` (or go back to it with "
            "--rollback) before another migration"
        )


def migrate(settings: RunSettings, min_coverage: float = 1.0) -> MigrationReport:
    """Build the next version of ``settings.target.table`` from the source and, when it covers
    ``min_coverage`` of the source's ids, swap it in."""
    from jobs.launch import run_job
    from jobs.plan import plan_run

    if not 0 < min_coverage <= 1:
        raise ConfigError("--min-coverage must be more than 0 and at most 1")
    if settings.source.limit is not None:
        raise ConfigError("a migration builds the whole source: drop --limit")
    if settings.target.dest != "collection" or settings.runtime.dry_run:
        raise ConfigError("vectorize migrate moves a collection: drop --dest column and --dry-run")
    name = settings.target.table
    if not name:
        raise ConfigError("--table is required: the collection to migrate")
    dsn = database_dsn(settings.target.dsn, settings.target.data_dir)
    live = Collection(name)
    with connect(dsn, vector=False) as conn:
        versions = read_versions(conn, name)
    current = _live_or_refuse(versions, name)
    plan = plan_run(replace(settings, target=replace(settings.target, migration=True)))  # source and model checked
    identity = plan.inputs.identity
    request = _storage_request(settings.target.storage, current.storage, identity.dimensions, name)
    storage = storage_for(request, None, identity.dimensions, name)
    check_migration(versions, name, identity, storage)
    settings = replace(settings, target=replace(settings.target, migration=True, **asdict(request)))
    plan = replace(plan, settings=settings, target=replace(plan.target, storage=request))  # the source and model once
    copied = _copy_same_model(dsn, live, current, plan, request) if current.identity.same_model(identity) else 0
    build = run_job(settings, plan)
    assert isinstance(build, RunSummary)
    with connect(dsn, vector=False) as conn:
        figures = version_figures(conn, live.in_schema(NEXT_SCHEMA))
    waiting = build.batch_api.waiting_rows if build.batch_api is not None else 0
    swapped = waiting == 0 and figures.coverage >= min_coverage
    if swapped:
        swap(dsn, name)
    return MigrationReport(name, current.identity.name, identity.name, build, figures, min_coverage, swapped, copied,
                           waiting)  # fmt: skip


def _copy_same_model(dsn: str, live: Collection, current: Registered, plan, request: StorageRequest) -> int:
    """Same model, other storage: the next version made, and the live vectors copied into it."""
    from vectorize.store.registry import prepare_collection
    from vectorize.store.versions import copy_vectors

    shadow = live.in_schema(NEXT_SCHEMA)
    chosen = prepare_collection(dsn, shadow, plan.inputs.identity, plan.inputs.origin, request,
                                plan.inputs.provider_record)  # fmt: skip
    with connect(dsn, vector=False) as conn:
        copied = copy_vectors(conn, live, shadow, chosen.column_type(current.identity.dimensions))
    logger.info("copied %d vectors of %s into the next version of %s", copied, current.identity.name, live.name)
    return copied


def swap(dsn: str, name: str) -> None:
    """The next version in, under the run locks of both versions (a run writing either ends first)."""
    from vectorize.store.run_lock import run_lock
    from vectorize.store.versions import swap_in_next

    live = Collection(name)
    with run_lock(dsn, live.key), run_lock(dsn, live.in_schema(NEXT_SCHEMA).key) as conn:
        versions = read_versions(conn, name)
        if versions.next is None:
            raise MigrationError(f"collection {name!r} has no migration in progress")
        if versions.previous is not None:
            raise MigrationError(
                f"collection {name!r} keeps a previous version: free it with --drop-previous before the swap"
            )
        swap_in_next(conn, name)


def roll_back(dsn: str, name: str) -> str:
    """The previous version live again (and the live one kept as previous); a line saying so."""
    from vectorize.store.run_lock import run_lock
    from vectorize.store.versions import roll_back as exchange

    live = Collection(name)
    with run_lock(dsn, live.key) as conn:
        versions = read_versions(conn, name)
        _live_or_refuse(versions, name)
        if versions.previous is None:
            raise MigrationError(f"collection {name!r} has no previous version to roll back to")
        exchange(conn, name)
    assert versions.live is not None
    return (
        f"collection {name!r} answers with {versions.previous.identity.name} again; its {versions.live.identity.name} "
        f"version is kept as previous (--rollback again returns to it, --drop-previous frees it)"
    )


def drop_previous(dsn: str, name: str) -> str:
    """The previous version dropped, under the live run lock (which a rollback takes too)."""
    from vectorize.store.run_lock import run_lock
    from vectorize.store.versions import drop_version

    with run_lock(dsn, Collection(name).key) as conn:
        versions = read_versions(conn, name)
        _live_or_refuse(versions, name)
        if versions.previous is None:
            raise MigrationError(f"collection {name!r} keeps no previous version: nothing to drop")
        drop_version(conn, Collection(name, PREVIOUS_SCHEMA))
    return f"collection {name!r}: its previous version ({versions.previous.identity.name}) is dropped"


def abort(dsn: str, name: str) -> str:
    """The migration in progress dropped, unless its build is running or has batches open."""
    from vectorize.store.batch_work import open_submissions
    from vectorize.store.versions import drop_version

    shadow = Collection(name, NEXT_SCHEMA)
    with connect(dsn, vector=False) as conn:
        versions = read_versions(conn, name)
        if versions.next is None:
            raise MigrationError(f"collection {name!r} has no migration in progress: nothing to abort")
        key = f"vectorize-run:{shadow.key}"
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
            raise MigrationError(f"the migration of {name!r} is building now: stop it first, then --abort")
        try:
            if open_submissions(conn, shadow):  # paid for already: collect or cancel them first
                raise MigrationError(
                    f"the migration of {name!r} has Batch API batches open: run it again to collect them (or with "
                    "--batch-api --cancel to cancel them), then --abort"
                )
            drop_version(conn, shadow)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
    return f"collection {name!r}: the migration to {versions.next.identity.name} is dropped"


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.migrate SOURCE --table T --model NEW ...``: ``vectorize migrate`` for ``ray job submit``."""
    import sys

    from vectorize.cli import main as cli_main

    return cli_main(["migrate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
