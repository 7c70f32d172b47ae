"""The options of ``vectorize run`` (and so of ``python -m jobs.embed``), each the CLI's name
for one field of the run's settings.

An option a user does not give leaves its field out, so the field's own default applies: the
defaults are stated once, in ``vectorize.settings``, and only shown in the help here.
"""

from __future__ import annotations

import argparse

from vectorize.chunking import LONG_TEXT_MODES
from vectorize.cli_provider import add_batch_options, add_provider_options, remote_settings
from vectorize.options import add_database_options, option
from vectorize.settings import (
    ChunkSettings,
    EmbeddingSettings,
    RunSettings,
    RuntimeSettings,
    SourceSettings,
    TargetSettings,
    field_names,
    parse_actors,
)
from vectorize.store.storage import INDEX_KINDS, VECTOR_TYPES

_RUN_FIELDS = frozenset(
    name
    for group in (SourceSettings, ChunkSettings, TargetSettings, EmbeddingSettings, RuntimeSettings)
    for name in field_names(group)
)


def add_run_options(run: argparse.ArgumentParser, *, source_required: bool = True) -> None:
    source = run.add_argument_group("source")
    source.add_argument(
        "source",
        nargs=None if source_required else "?",
        help="a file or folder (Parquet, CSV, JSON, JSONL, .gz), git:REPO, jira:EXPORT, github:EXPORT, "
        "or postgresql://... with --source-table or --query",
    )
    option(source, ("--id-field", "--id-column"), SourceSettings, "id_field", "what identifies a record")
    option(
        source, "--text", SourceSettings, "text",
        'field or template of the text, e.g. "{title}\\n\\n{body}" (default: the source\'s own, else {text})',
    )  # fmt: skip
    option(source, "--source-table", SourceSettings, "source_table", "a Postgres source: TABLE or SCHEMA.TABLE")
    option(source, "--query", SourceSettings, "query", "a Postgres source: the SELECT that gives its rows")
    option(source, "--limit", SourceSettings, "limit", "embed only the first N records", type=int)

    chunks = run.add_argument_group("long texts")
    option(
        chunks, "--long-text", ChunkSettings, "long_text",
        "a text past the model's window: cut, split into chunks, or an error row "
        "(default: chunk for Jira and GitHub threads; truncate for files, git and Postgres rows)",
        choices=LONG_TEXT_MODES,
    )  # fmt: skip
    option(chunks, "--chunk-tokens", ChunkSettings, "chunk_tokens", "tokens a chunk (default: the window)", type=int)
    option(chunks, "--chunk-overlap", ChunkSettings, "chunk_overlap", "tokens consecutive chunks share", type=int)

    target = run.add_argument_group("target")
    option(target, "--table", TargetSettings, "table", "the collection (table) to write; not with --dest column")
    option(
        target, "--dest", TargetSettings, "dest",
        "collection: a table of vectors (--table); column: backfill a vector column of the --source-table",
        choices=("collection", "column"),
    )  # fmt: skip
    option(target, "--column", TargetSettings, "column", "with --dest column: the vector column")
    option(target, "--sync", TargetSettings, "sync", "also delete what the source no longer has", action="store_true")
    add_database_options(target)
    option(target, "--vector-type", TargetSettings, "vector_type", "how vectors are stored: vector (4 bytes a "
           "dimension) or halfvec (2); default halfvec past 2000 dimensions", choices=VECTOR_TYPES)  # fmt: skip
    option(target, "--index", TargetSettings, "index", "hnsw, hnsw-bq (binary-quantized, re-ranked) or none "
           "(default hnsw)", choices=INDEX_KINDS)  # fmt: skip
    option(target, "--hnsw-m", TargetSettings, "hnsw_m", "HNSW links per node (default 16)", type=int)
    option(target, "--hnsw-ef-construction", TargetSettings, "hnsw_ef_construction",
           "HNSW candidates while building (default 64)", type=int)  # fmt: skip
    option(target, "--text-search", TargetSettings, "text_search", "the text search configuration of the "
           "keyword index (default simple); none: no keyword index (keyword and hybrid search refused, "
           "writes cheaper)")  # fmt: skip

    embedding = run.add_argument_group("model")
    option(
        embedding, "--model", EmbeddingSettings, "model",
        "a SentenceTransformers folder or cached name, or with --provider the API's model",
    )  # fmt: skip
    option(embedding, "--batch-size", EmbeddingSettings, "batch_size", "rows per call of an embedding actor "
           "(default 1024, remote 256)", type=int)  # fmt: skip
    option(embedding, "--encode-batch-size", EmbeddingSettings, "encode_batch_size",
           "texts per forward pass (default 64 on CPU; on a GPU, what fits)", type=int)  # fmt: skip

    runtime = run.add_argument_group("execution")
    option(runtime, "--address", RuntimeSettings, "ray_address", "Ray address (default: $RAY_ADDRESS, else local)")
    option(runtime, "--actors", RuntimeSettings, "actors", "embedding actors, N or MIN,MAX", type=parse_actors)
    option(runtime, "--cpus-per-actor", RuntimeSettings, "cpus_per_actor", "CPUs (and torch threads) an embedding "
           "actor takes", type=float)  # fmt: skip
    option(runtime, "--gpus-per-actor", RuntimeSettings, "gpus_per_actor", "GPUs an embedding actor takes; "
           "fractions share a card", type=float)  # fmt: skip
    option(runtime, "--writers", RuntimeSettings, "writers", "concurrent database writes (connections)", type=int)
    option(runtime, "--stall-timeout", RuntimeSettings, "stall_timeout_s", "fail when no row is finished for "
           "this many seconds; 0: never", type=float)  # fmt: skip
    option(runtime, "--dry-run", RuntimeSettings, "dry_run", "read and prepare the source, then say what a run "
           "would embed, reuse and skip, its tokens, cost and time; write and embed nothing",
           action="store_true")  # fmt: skip
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_provider_options(run)
    add_batch_options(run)


def run_settings(args: argparse.Namespace) -> RunSettings:
    given = {name: value for name, value in vars(args).items() if name in _RUN_FIELDS and value is not None}
    return RunSettings.of(
        **given,
        remote=remote_settings(args, given.get("model"), strict=True),
        progress=not args.json,
        worker_logs=args.debug,
    )
