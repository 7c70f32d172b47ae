"""The settings of an embedding run, as the CLI and `python -m jobs.embed` give them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vectorize.errors import ConfigError
from vectorize.models import DEFAULT_MODEL
from vectorize.remote_settings import RemoteSettings

# Longer than an autoscaler takes to start and set up a GPU node, or a slow query's first
# block; short enough that a pool waiting for nodes that never come does not hold a job for hours.
DEFAULT_STALL_TIMEOUT_S = 1800.0


@dataclass
class RunSettings:
    source: str
    table: str
    id_field: str = "id"
    text: str | None = None  # a template; None: the source's default
    source_table: str | None = None  # a Postgres source: the table, or
    query: str | None = None  # the query that gives its rows
    sync: bool = False  # delete what the source no longer has
    long_text: str | None = None  # truncate | chunk | error; None: the source's default
    chunk_tokens: int | None = None  # None: the model's window
    chunk_overlap: int = 32
    dest: str = "collection"  # collection | column: into the source table's own column
    column: str = "embedding"  # the column, with --dest column
    model: str = DEFAULT_MODEL
    dsn: str | None = None
    data_dir: Path | None = None
    batch_size: int | None = None  # rows per call of an embedding actor; None: the provider's default
    encode_batch_size: int | None = None  # texts per forward pass inside it; None: 64 on CPU, fitted to a GPU
    actors: tuple[int, int] | None = None  # (min, max); None: one per GPU, or sized to the CPUs
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    writers: int = 2
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S  # 0: never
    limit: int | None = None
    ray_address: str | None = None
    progress: bool = False
    worker_logs: bool = False
    remote: RemoteSettings | None = None  # an OpenAI-compatible provider's settings
    provider: str | None = None  # a registered provider's name; None: the remote's, else local

    def __post_init__(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or (
            self.encode_batch_size is not None and self.encode_batch_size < 1
        ):
            raise ConfigError("--batch-size and --encode-batch-size must be at least 1")
        if self.writers < 1:
            raise ConfigError("--writers must be at least 1")
        if self.stall_timeout_s < 0:
            raise ConfigError("--stall-timeout must be 0 (never) or more seconds")
        if (self.cpus_per_actor is not None and self.cpus_per_actor <= 0) or (
            self.gpus_per_actor is not None and self.gpus_per_actor < 0
        ):
            raise ConfigError("--cpus-per-actor must be more than 0 and --gpus-per-actor 0 or more")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("--limit must be 0 or more")
        if self.actors is not None:
            low, high = self.actors
            if low < 1 or high < low:
                raise ConfigError("--actors MIN,MAX needs 1 <= MIN <= MAX")

    @property
    def provider_name(self) -> str:
        return self.provider or (self.remote.provider if self.remote is not None else "local")


def default_of(settings: type, name: str):
    """The default a settings dataclass gives its field ``name``: the one place it is stated."""
    return settings.__dataclass_fields__[name].default


def parse_actors(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise ConfigError(f"--actors {text!r}: give MIN,MAX or N, like 1,4") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ConfigError(f"--actors {text!r}: give MIN,MAX or N, like 1,4")
