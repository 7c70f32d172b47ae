"""``vectorize migrate --table T --status``: each version of a collection (live, next, previous)
with its model, storage and rows, and how far the build of the next one has come."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vectorize.db import connect
from vectorize.errors import UnknownCollectionError
from vectorize.store.collection import LIVE_SCHEMA, NEXT_SCHEMA, PREVIOUS_SCHEMA, Collection
from vectorize.store.registry import Registered
from vectorize.store.runs import run_history
from vectorize.store.versions import read_versions, version_figures

ROLES = {LIVE_SCHEMA: "live", NEXT_SCHEMA: "next", PREVIOUS_SCHEMA: "previous"}


@dataclass(frozen=True)
class VersionStatus:
    role: str
    model: str
    dimensions: int
    vector_type: str
    index: str
    keyword_index: str  # "keyword index simple", or "no keyword index"
    rows: int
    ids: int
    failed_ids: int
    source_failed_ids: int  # ids the source cannot give (read and prepare errors)

    def render(self) -> str:
        failed = f", {self.failed_ids} ids failed" if self.failed_ids else ""
        if self.source_failed_ids:
            failed += f", {self.source_failed_ids} records the source cannot give"
        return (f"{self.role:<9} {self.model} ({self.dimensions} dims, {self.vector_type}, index {self.index}, "
                f"{self.keyword_index}): "
                f"{self.rows} rows, {self.ids} ids{failed}")  # fmt: skip


@dataclass(frozen=True)
class MigrationStatus:
    collection: str
    versions: list[VersionStatus]
    building: bool  # a build of the next version is running now
    last_build: dict | None  # the next version's latest run: status, rows read, when

    def _role(self, role: str) -> VersionStatus | None:
        return next((v for v in self.versions if v.role == role), None)

    def to_dict(self) -> dict:
        return {
            "collection": self.collection,
            "versions": {v.role: asdict(v) for v in self.versions},
            "building": self.building,
            "last_build": self.last_build,
        }

    def render(self) -> str:
        lines = [f"collection {self.collection!r}"] + ["  " + v.render() for v in self.versions]
        live, building = self._role("live"), self._role("next")
        if building is None:
            lines.append("  no migration in progress")
        else:
            done = f"{building.ids} of the {live.ids} ids live has" if live else f"{building.ids} ids"
            state = "building now" if self.building else f"last build {(self.last_build or {}).get('status', 'none')}"
            lines.append(f"  migration: {done} ({state})")
        if self._role("previous") is None:
            lines.append("  no previous version kept")
        return "\n".join(lines)


def _status(role: str, found: Registered, conn, collection: Collection) -> VersionStatus:
    figures = version_figures(conn, collection)
    identity, storage = found.identity, found.storage
    return VersionStatus(role, identity.name, identity.dimensions, storage.vector_type, storage.index,
                         storage.keyword_index, figures.rows, figures.ids, figures.failed_ids,
                         figures.source_failed_ids)  # fmt: skip


def migration_status(dsn: str, name: str) -> MigrationStatus:
    live = Collection(name)
    with connect(dsn, vector=False) as conn:
        versions = read_versions(conn, name)
        if versions.live is None:
            raise UnknownCollectionError(f"no collection {name!r} in this database")
        found = {LIVE_SCHEMA: versions.live, NEXT_SCHEMA: versions.next, PREVIOUS_SCHEMA: versions.previous}
        statuses = [
            _status(ROLES[schema], registered, conn, live.in_schema(schema))
            for schema, registered in found.items()
            if registered is not None
        ]
        shadow_key = live.in_schema(NEXT_SCHEMA).key
        key = f"vectorize-run:{shadow_key}"
        free = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]
        if free:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        history = run_history(conn, shadow_key, limit=1) if versions.next is not None else []
    last = None
    if history:
        run = history[-1]
        last = {"status": run["status"], "rows_read": run["rows_read"], "failed": run["failed"],
                "started_at": run["started_at"].isoformat(), "error": run["error"]}  # fmt: skip
    return MigrationStatus(name, statuses, building=not free, last_build=last)
