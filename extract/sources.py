"""Naming a source, checked before any work: a prefix names its kind.

- ``git:/path``: a repository's commits;
- ``jira:PATH`` / ``github:PATH``: API exports (JSON, JSON Lines, or a folder of them),
  flattened by :mod:`extract.jira` / :mod:`extract.github`, each with a default text template;
- ``postgresql://...``: a table or query (:mod:`extract.sql_source`);
- anything else: a file or a folder of files. Parquet and CSV are read by Ray Data's own
  readers; JSON and JSON Lines by the tolerant reader in :mod:`extract.json_source`.

A field the run needs that the source does not have stops the run here, naming the fields it
does have.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vectorize.errors import ConfigError, SourceError
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)

_SAMPLE_RECORDS = 200
_KINDS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    **{suffix: "json" for suffix in (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")},
}


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_KINDS, key=len, reverse=True):
        if name.endswith(suffix):
            return _KINDS[suffix]
    return None


@dataclass
class SourcePlan:
    spec: str
    kind: str  # git | json | parquet | csv | jira | github | sql
    paths: list[str] = field(default_factory=list)
    fields: tuple[str, ...] = ()
    fields_exact: bool = True  # False: fields seen in a sample of the records
    default_text: str = "{text}"
    default_long_text: str = "truncate"  # records; threads of a tracker (description, comments) are chunked
    flatten: Callable[[Any], dict[str, str]] | None = None  # raw API object -> template fields
    metadata_fields: tuple[str, ...] | None = None
    envelope: tuple[str, ...] = ()  # keys of an API page whose list holds the records
    sql: Any = None  # extract.sql_source.SqlSource
    only_ids: list[str] | None = None  # read just these rows (a SQL source whose other rows are stored)
    statement: Any = None  # a SQL source read by another statement (backfill in place)

    @property
    def display(self) -> str:
        """The source as logs and the run history show it (a DSN without its password)."""
        return self.sql.display if self.sql is not None else self.spec

    def check_fields(self, id_field: str, template: TextTemplate) -> None:
        known = set(self.fields)
        for name in (id_field, *template.fields):
            if name not in known:
                where = "in its first records" if not self.fields_exact else ""
                raise SourceError(
                    f"field {name!r} is not in the source {self.display} {where}".rstrip()
                    + f" (its fields: {', '.join(self.fields) or 'none'})"
                )

    def read(self, num_cpus: float):  # -> ray.data.Dataset
        """A Ray dataset of the source; each read task takes ``num_cpus``."""
        import ray.data

        if self.kind == "git":
            from extract.git_source import GitDatasource

            return ray.data.read_datasource(GitDatasource(self.paths[0]), num_cpus=num_cpus)
        if self.kind == "sql":
            return self.sql.read(num_cpus, self.only_ids, statement=self.statement)
        if self.kind in ("json", "jira", "github"):
            from extract.json_source import JsonRecordsDatasource

            # Ray Data cuts each read block into pieces (its count of blocks for the file's size):
            # small tasks, so that every embedding actor has work and rows are written as they go
            return ray.data.read_datasource(JsonRecordsDatasource(self.paths, self.envelope), num_cpus=num_cpus)
        if self.kind == "parquet":
            return ray.data.read_parquet(self.paths, num_cpus=num_cpus)
        return ray.data.read_csv(self.paths, num_cpus=num_cpus)


def open_source(
    spec: str, *, source_table: str | None = None, query: str | None = None, id_field: str = "id"
) -> SourcePlan:
    from extract.sql_source import is_sql_source, open_sql_source

    if (source_table or query) and not is_sql_source(spec):
        raise ConfigError("--source-table and --query are for a Postgres source (postgresql://...)")
    if is_sql_source(spec):
        sql_source, columns = open_sql_source(spec, source_table, query, id_field)
        return SourcePlan(spec, "sql", [], columns, sql=sql_source)
    if spec.startswith("git:"):
        from extract.git_source import GIT_FIELDS, check_repository

        repo = check_repository(Path(spec[4:] or ".").expanduser())
        return SourcePlan(spec, "git", [str(repo)], GIT_FIELDS)
    if spec.startswith("jira:"):
        from extract.jira import JIRA_FIELDS, JIRA_METADATA, JIRA_TEMPLATE, flatten_jira_issue

        return SourcePlan(
            spec, "jira", _json_files(spec, spec[5:]), JIRA_FIELDS, default_text=JIRA_TEMPLATE,
            default_long_text="chunk", flatten=flatten_jira_issue, metadata_fields=JIRA_METADATA, envelope=("issues",),
        )  # fmt: skip
    if spec.startswith("github:"):
        from extract.github import GITHUB_FIELDS, GITHUB_METADATA, GITHUB_TEMPLATE, flatten_github_item

        return SourcePlan(
            spec, "github", _json_files(spec, spec[7:]), GITHUB_FIELDS, default_text=GITHUB_TEMPLATE,
            default_long_text="chunk", flatten=flatten_github_item, metadata_fields=GITHUB_METADATA,
            envelope=("items",),
        )  # fmt: skip
    files, kind = _files(spec, spec)
    paths = [str(p.resolve()) for p in files]
    fields, exact = _discover_fields(kind, files[0])
    return SourcePlan(spec, kind, paths, fields, exact)


def _json_files(spec: str, location: str) -> list[str]:
    files, kind = _files(spec, location)
    if kind != "json":
        raise SourceError(f"{spec}: an export is JSON or JSON Lines (.json, .jsonl, .ndjson, optionally .gz)")
    return [str(p.resolve()) for p in files]


def _files(spec: str, location: str) -> tuple[list[Path], str]:
    """The readable files at ``location`` (a file, or a folder's files of one kind) and their kind."""
    path = Path(location).expanduser()
    if not path.exists():
        raise SourceError(f"cannot read {spec}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise SourceError(f"cannot read {spec}: permission denied")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind_of(p))
        kinds = {_kind_of(p) for p in files}
        if not files:
            raise SourceError(f"{spec} holds no Parquet, CSV, JSON or JSON Lines files")
        if len(kinds) > 1:
            raise SourceError(f"{spec} mixes {' and '.join(sorted(kinds))} files: point at one kind")
    else:
        files = [path]
        if _kind_of(path) is None:
            raise SourceError(
                f"cannot read {spec}: unknown file type (use .parquet, .csv, .json, .jsonl, .ndjson, optionally .gz)"
            )
    kind = _kind_of(files[0])
    assert kind is not None
    return files, kind


def _discover_fields(kind: str, first: Path) -> tuple[tuple[str, ...], bool]:
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return tuple(pq.read_schema(first).names), True
        if kind == "csv":
            import pyarrow.csv as pcsv

            with pcsv.open_csv(first) as reader:
                return tuple(reader.schema.names), True
        return _sample_json_fields(first), False
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot read {first}: {exc}") from None


def _sample_json_fields(path: Path) -> tuple[str, ...]:
    from extract.json_source import iter_json_records

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(8 << 20)
        if head.lstrip().startswith(b"["):
            head += fh.read()  # an array parses only whole
        elif b"\n" in head:
            head = head.rsplit(b"\n", 1)[0]
    seen: dict[str, None] = {}
    for i, (raw, _) in enumerate(iter_json_records(head, str(path))):
        if i >= _SAMPLE_RECORDS:
            break
        try:
            record = json.loads(raw, strict=False)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            seen.update(dict.fromkeys(record))
    return tuple(seen)
