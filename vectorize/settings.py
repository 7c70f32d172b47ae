"""The settings of an embedding run, in groups: where rows come from, how long texts are cut,
where vectors go, which model makes them, and how the run executes. Each default is stated here
once; the CLI's options (``vectorize.run_options``) take theirs from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from vectorize.errors import ConfigError
from vectorize.models import DEFAULT_MODEL
from vectorize.remote_settings import RemoteSettings
from vectorize.store.storage import StorageRequest

# Longer than an autoscaler takes to start and set up a GPU node, or a slow query's first
# block; short enough that a pool waiting for nodes that never come does not hold a job for hours.
DEFAULT_STALL_TIMEOUT_S = 1800.0
# A run's start (Ray starting its worker processes, actors loading their model, the provider's
# first answer) on a busy cluster can outlast a short stall timeout: it is given at least this.
START_ALLOWANCE_S = 60.0


@dataclass(frozen=True)
class SourceSettings:
    source: str
    id_field: str = "id"
    text: str | None = None  # a template; None: the source's default
    source_table: str | None = None  # a Postgres source: the table, or
    query: str | None = None  # the query that gives its rows
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ConfigError("--limit must be 0 or more")


@dataclass(frozen=True)
class ChunkSettings:
    long_text: str | None = None  # truncate | chunk | error; None: the source's default
    chunk_tokens: int | None = None  # None: the model's window
    chunk_overlap: int = 32


@dataclass(frozen=True)
class TargetSettings:
    dest: str = "collection"  # collection | column: into the source table's own column
    table: str = ""  # the collection
    column: str = "embedding"  # the column, with dest column
    sync: bool = False  # delete what the source no longer has
    migration: bool = False  # into the collection's next version, which `vectorize migrate` builds
    dsn: str | None = None  # None: $VECTORIZE_DSN, else the embedded server
    data_dir: Path | None = None  # the embedded server's
    # a collection's storage (vectorize.store.storage); None: as recorded, or the default
    vector_type: str | None = None
    index: str | None = None
    hnsw_m: int | None = None
    hnsw_ef_construction: int | None = None
    text_search: str | None = None

    @property
    def storage(self) -> StorageRequest:
        return StorageRequest(self.vector_type, self.index, self.hnsw_m, self.hnsw_ef_construction, self.text_search)


@dataclass(frozen=True)
class EmbeddingSettings:
    model: str = DEFAULT_MODEL
    provider: str | None = None  # a registered provider's name; None: the remote's, else local
    remote: RemoteSettings | None = None  # an OpenAI-compatible provider's settings
    batch_size: int | None = None  # rows per call of an embedding actor; None: the provider's default
    encode_batch_size: int | None = None  # texts per forward pass inside it; None: 64 on CPU, fitted to a GPU

    def __post_init__(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or (
            self.encode_batch_size is not None and self.encode_batch_size < 1
        ):
            raise ConfigError("--batch-size and --encode-batch-size must be at least 1")

    @property
    def provider_name(self) -> str:
        return self.provider or (self.remote.provider if self.remote is not None else "local")


@dataclass(frozen=True)
class RuntimeSettings:
    ray_address: str | None = None  # None: $RAY_ADDRESS, else a local Ray
    actors: tuple[int, int] | None = None  # (min, max); None: one per GPU, or sized to the CPUs
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    writers: int = 2
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S  # 0: never
    progress: bool = False
    worker_logs: bool = False
    dry_run: bool = False  # read and prepare, count and estimate; write and embed nothing

    @property
    def start_within_s(self) -> float:
        """The bound on a run's start: the stall timeout, at least :data:`START_ALLOWANCE_S`; 0: none."""
        return max(self.stall_timeout_s, START_ALLOWANCE_S) if self.stall_timeout_s > 0 else 0.0

    def __post_init__(self) -> None:
        if self.writers < 1:
            raise ConfigError("--writers must be at least 1")
        if self.stall_timeout_s < 0:
            raise ConfigError("--stall-timeout must be 0 (never) or more seconds")
        if (self.cpus_per_actor is not None and self.cpus_per_actor <= 0) or (
            self.gpus_per_actor is not None and self.gpus_per_actor < 0
        ):
            raise ConfigError("--cpus-per-actor must be more than 0 and --gpus-per-actor 0 or more")
        if self.actors is not None:
            low, high = self.actors
            if low < 1 or high < low:
                raise ConfigError("--actors MIN,MAX needs 1 <= MIN <= MAX")


_GROUPS = {
    "source": SourceSettings,
    "chunks": ChunkSettings,
    "target": TargetSettings,
    "embedding": EmbeddingSettings,
    "runtime": RuntimeSettings,
}


@dataclass(frozen=True)
class RunSettings:
    source: SourceSettings
    target: TargetSettings = field(default_factory=TargetSettings)
    chunks: ChunkSettings = field(default_factory=ChunkSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    @classmethod
    def of(cls, **given: object) -> RunSettings:
        """Settings from the fields' own names (``source=..., table=..., actors=...``), each
        given to its group; a name no group has is a TypeError, as a misspelt keyword is."""
        unknown = set(given) - {name for group in _GROUPS.values() for name in field_names(group)}
        if unknown:
            raise TypeError(f"no run setting named {', '.join(sorted(unknown))}")
        return cls(
            **{
                name: group(**{k: v for k, v in given.items() if k in field_names(group)})
                for name, group in _GROUPS.items()
            }
        )


def field_names(settings: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(settings))


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
