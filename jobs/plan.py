"""A run decided once: its inputs checked, its provider chosen (a remote model probed), its
target named, all before anything is written or Ray starts. Nothing changes a plan after."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from extract.sources import open_source
from extract.sql_source import SQL_PREFIXES
from jobs.targets import CollectionTarget, ColumnTarget, Inputs, Target
from vectorize.chunking import long_text_policy
from vectorize.config import RunSettings
from vectorize.embedded_pg import database_dsn, given_dsn
from vectorize.errors import ConfigError
from vectorize.providers.base import ProviderRequest, ProviderSpec, provider_spec
from vectorize.store.collection import Collection
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    settings: RunSettings  # the pipeline's and the Ray runtime's knobs
    inputs: Inputs
    provider: ProviderSpec
    target: Target


def plan_run(settings: RunSettings) -> RunPlan:
    if settings.dest == "column":
        return _column_plan(settings)
    if not settings.table:
        raise ConfigError("--table is required: the collection to write (or --dest column)")
    collection = Collection(settings.table)
    if settings.sync and settings.limit is not None:
        raise ConfigError("--sync leaves the collection holding exactly the source's rows: it cannot take --limit")
    inputs, provider = _checked_inputs(settings)
    target = CollectionTarget(
        collection,
        database_dsn(settings.dsn, settings.data_dir),
        embedded_database=given_dsn(settings.dsn) is None,
        sync=settings.sync,
        complete=settings.limit is None,
    )
    return RunPlan(settings, inputs, provider, target)


def _column_plan(settings: RunSettings) -> RunPlan:
    from vectorize.store.column_target import VectorColumn

    if not settings.source.startswith(SQL_PREFIXES) or not settings.source_table:
        raise ConfigError("--dest column writes into the source table: give postgresql://... --source-table TABLE")
    for given, option in ((settings.table, "--table"), (settings.dsn, "--dsn"), (settings.sync, "--sync")):
        if given:
            raise ConfigError(f"--dest column writes into the source table's own database: drop {option}")
    if settings.long_text == "chunk":
        raise ConfigError("a column holds one vector per row: use --long-text truncate or error")
    column = VectorColumn(settings.source_table, settings.column, settings.id_field)
    inputs, provider = _checked_inputs(settings, long_text=settings.long_text or "truncate")
    fields = inputs.source.fields
    if settings.column in fields and f"{settings.column}_sha256" not in fields:
        logger.info("column %s exists; its vectors without a hash beside them are made again", column.name)
    return RunPlan(settings, inputs, provider, ColumnTarget(column, inputs.source.sql.dsn))


def _checked_inputs(settings: RunSettings, long_text: str | None = None) -> tuple[Inputs, ProviderSpec]:
    """The source, template, provider (its model's identity checked) and long-text policy."""
    source = open_source(
        settings.source, source_table=settings.source_table, query=settings.query, id_field=settings.id_field
    )
    template = TextTemplate.parse(settings.text or source.default_text)
    source.check_fields(settings.id_field, template)
    request = ProviderRequest(
        settings.provider_name,
        settings.model,
        remote=settings.remote,
        probe_within_s=settings.stall_timeout_s,
        encode_batch_size=settings.encode_batch_size,
    )
    provider = provider_spec(request)
    mode = long_text or settings.long_text or source.default_long_text
    policy = long_text_policy(mode, settings.chunk_tokens, settings.chunk_overlap, provider)
    inputs = Inputs(source, settings.id_field, template, policy, provider.identity, provider.origin)
    return inputs, provider
