"""A run decided once: its inputs checked, its provider chosen (a remote model probed), its
target named, all before anything is written or Ray starts. Nothing changes a plan after."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from extract.sources import open_source
from extract.sql_source import SQL_PREFIXES
from jobs.targets import CollectionTarget, ColumnTarget, Inputs, Target
from vectorize.chunking import long_text_policy
from vectorize.embedded_pg import database_dsn, given_dsn
from vectorize.errors import ConfigError
from vectorize.providers.base import ProviderRequest, ProviderSpec, is_deferred, provider_spec
from vectorize.settings import RunSettings
from vectorize.store.collection import LIVE_SCHEMA, NEXT_SCHEMA, Collection
from vectorize.store.storage import StorageRequest
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    settings: RunSettings  # frozen: the pipeline and the runner read their groups
    inputs: Inputs
    provider: ProviderSpec
    target: Target


def plan_run(settings: RunSettings) -> RunPlan:
    wanted = settings.target
    if wanted.dest == "column":
        return _column_plan(settings)
    if not wanted.table:
        raise ConfigError("--table is required: the collection to write (or --dest column)")
    collection = Collection(wanted.table, NEXT_SCHEMA if wanted.migration else LIVE_SCHEMA)
    if wanted.sync and settings.source.limit is not None:
        raise ConfigError("--sync leaves the collection holding exactly the source's rows: it cannot take --limit")
    inputs, provider = _checked_inputs(settings)
    target = CollectionTarget(
        collection,
        database_dsn(wanted.dsn, wanted.data_dir),
        embedded_database=given_dsn(wanted.dsn) is None,
        sync=wanted.sync,
        complete=settings.source.limit is None,
        storage=wanted.storage,
    )
    return RunPlan(settings, inputs, provider, target)


def _column_plan(settings: RunSettings) -> RunPlan:
    from vectorize.store.column_target import VectorColumn

    source, wanted = settings.source, settings.target
    remote = settings.embedding.remote
    if remote is not None and remote.batch is not None:
        raise ConfigError("--batch-api writes into a collection: drop --dest column, or --batch-api")
    if not source.source.startswith(SQL_PREFIXES) or not source.source_table:
        raise ConfigError("--dest column writes into the source table: give postgresql://... --source-table TABLE")
    for given, option in ((wanted.table, "--table"), (wanted.dsn, "--dsn"), (wanted.sync, "--sync")):
        if given:
            raise ConfigError(f"--dest column writes into the source table's own database: drop {option}")
    if wanted.storage != StorageRequest():
        raise ConfigError("--dest column stores a vector column without an index of its own: drop --vector-type, "
                          "--index, --hnsw-m, --hnsw-ef-construction and --text-search")  # fmt: skip
    if settings.chunks.long_text == "chunk":
        raise ConfigError("a column holds one vector per row: use --long-text truncate or error")
    column = VectorColumn(source.source_table, wanted.column, source.id_field)
    inputs, provider = _checked_inputs(settings, long_text=settings.chunks.long_text or "truncate")
    fields = inputs.source.fields
    if wanted.column in fields and f"{wanted.column}_sha256" not in fields:
        logger.info("column %s exists; its vectors without a hash beside them are made again", column.name)
    return RunPlan(settings, inputs, provider, ColumnTarget(column, inputs.source.sql.dsn))


def _checked_inputs(settings: RunSettings, long_text: str | None = None) -> tuple[Inputs, ProviderSpec]:
    """The source, template, provider (its model's identity checked) and long-text policy."""
    given, embedding, chunks = settings.source, settings.embedding, settings.chunks
    source = open_source(given.source, source_table=given.source_table, query=given.query, id_field=given.id_field)
    template = TextTemplate.parse(given.text or source.default_text)
    source.check_fields(given.id_field, template)
    request = ProviderRequest(
        embedding.provider_name,
        embedding.model,
        remote=embedding.remote,
        probe_within_s=settings.runtime.start_within_s,
        encode_batch_size=embedding.encode_batch_size,
        probe=not settings.runtime.dry_run,
    )
    provider = provider_spec(request)
    mode = long_text or chunks.long_text or source.default_long_text
    policy = long_text_policy(mode, chunks.chunk_tokens, chunks.chunk_overlap, provider)
    record = embedding.remote.search_record() if embedding.remote is not None else None
    inputs = Inputs(source, given.id_field, template, policy, provider.identity, provider.origin, record,
                    is_deferred(provider))  # fmt: skip
    return inputs, provider
