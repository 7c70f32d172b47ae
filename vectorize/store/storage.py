"""How a collection stores and indexes its vectors: the vector type, the index and its options,
and the text search configuration of its keyword index (or none). Chosen by a collection's first run,
recorded in the registry, and held by every later run: a run that asks for other storage is
refused before any work (changing it is a migration).

pgvector's limits decide what fits: a ``vector`` or ``halfvec`` column holds up to 16,000
dimensions; an HNSW index takes ``vector`` up to 2,000, ``halfvec`` up to 4,000, and ``bit``
(the binary-quantized index) up to 64,000.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from psycopg import sql

from vectorize.errors import ConfigError

VECTOR_TYPES = ("vector", "halfvec")
INDEX_KINDS = ("hnsw", "hnsw-bq", "none")
NO_TEXT_SEARCH = "none"  # no keyword index: keyword and hybrid search refused, each write cheaper
MAX_COLUMN_DIMENSIONS = 16_000
MAX_HNSW_DIMENSIONS = {"vector": 2_000, "halfvec": 4_000}
MAX_BIT_DIMENSIONS = 64_000


@dataclass(frozen=True)
class StorageRequest:
    """What a run asks for; None: the collection's recorded choice, or the default for its model."""

    vector_type: str | None = None
    index: str | None = None
    hnsw_m: int | None = None
    hnsw_ef_construction: int | None = None
    text_search: str | None = None

    def __post_init__(self) -> None:
        if self.vector_type is not None and self.vector_type not in VECTOR_TYPES:
            raise ConfigError(f"--vector-type {self.vector_type!r}: choose {' or '.join(VECTOR_TYPES)}")
        if self.index is not None and self.index not in INDEX_KINDS:
            raise ConfigError(f"--index {self.index!r}: choose {', '.join(INDEX_KINDS)}")
        if self.hnsw_m is not None and not 2 <= self.hnsw_m <= 100:
            raise ConfigError("--hnsw-m must be from 2 to 100")
        if self.hnsw_ef_construction is not None and not 4 <= self.hnsw_ef_construction <= 1000:
            raise ConfigError("--hnsw-ef-construction must be from 4 to 1000")
        if self.text_search is not None and not self.text_search.replace("_", "").isalnum():
            raise ConfigError(f"--text-search {self.text_search!r}: name a text search configuration, like simple")


@dataclass(frozen=True)
class Storage:
    vector_type: str = "vector"
    index: str = "hnsw"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    text_search: str = "simple"

    @classmethod
    def from_json(cls, data: dict | str | None) -> Storage:
        """As recorded; a collection made before storage was recorded has the first defaults."""
        if data is None:
            return cls()
        given = json.loads(data) if isinstance(data, str) else data
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def keyword_search(self) -> bool:
        return self.text_search != NO_TEXT_SEARCH

    @property
    def keyword_index(self) -> str:
        """The keyword index in words, as the migration's messages name a version's storage."""
        return f"keyword index {self.text_search}" if self.keyword_search else "no keyword index"

    def column_type(self, dimensions: int) -> sql.Composed:
        return sql.SQL("{}({})").format(sql.SQL(self.vector_type), sql.Literal(dimensions))

    @property
    def cosine_ops(self) -> sql.SQL:
        return sql.SQL(f"{self.vector_type}_cosine_ops")

    def index_statement(self, index: sql.Identifier, table: sql.Identifier, dimensions: int) -> sql.Composed | None:
        if self.index == "none":
            return None
        options = sql.SQL("WITH (m = {}, ef_construction = {})").format(
            sql.Literal(self.hnsw_m), sql.Literal(self.hnsw_ef_construction)
        )
        if self.index == "hnsw-bq":
            indexed = sql.SQL("(binary_quantize(embedding)::bit({})) bit_hamming_ops").format(sql.Literal(dimensions))
        else:
            indexed = sql.SQL("embedding {}").format(self.cosine_ops)
        return sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw ({e}) {o}").format(
            i=index, t=table, e=indexed, o=options
        )


def storage_for(requested: StorageRequest, recorded: Storage | None, dimensions: int, name: str) -> Storage:
    """The storage of collection ``name`` for a model of ``dimensions``: the recorded one, which
    a request may only repeat, or for a new collection the request over the defaults (halfvec
    past the 2,000 dimensions a ``vector`` index takes). Refused, before any work, where the
    request differs from the record or the dimensions fit no column or index."""
    if recorded is not None:
        differing = [
            f"--{f.name.replace('_', '-')} {getattr(requested, f.name)} (it has {getattr(recorded, f.name)})"
            for f in fields(requested)
            if getattr(requested, f.name) is not None and getattr(requested, f.name) != getattr(recorded, f.name)
        ]
        if differing:
            raise ConfigError(
                f"collection {name!r} was made with other storage: {'; '.join(differing)}; drop those options "
                "or use another --table"
            )
        storage = recorded
    else:
        chosen = {f.name: getattr(requested, f.name) for f in fields(requested) if getattr(requested, f.name)}
        chosen.setdefault("vector_type", "halfvec" if dimensions > MAX_HNSW_DIMENSIONS["vector"] else "vector")
        storage = replace(Storage(), **chosen)
    check_fits(storage, dimensions)
    return storage


def check_fits(storage: Storage, dimensions: int) -> None:
    if dimensions > MAX_COLUMN_DIMENSIONS:
        raise ConfigError(
            f"the model gives {dimensions} dimensions; a pgvector column holds at most {MAX_COLUMN_DIMENSIONS}: "
            "ask the model for fewer (--dimensions) or choose another model"
        )
    if storage.index == "hnsw" and dimensions > MAX_HNSW_DIMENSIONS[storage.vector_type]:
        limit = MAX_HNSW_DIMENSIONS[storage.vector_type]
        better = "--vector-type halfvec" if dimensions <= MAX_HNSW_DIMENSIONS["halfvec"] else "--index hnsw-bq"
        raise ConfigError(
            f"the model gives {dimensions} dimensions; an HNSW index on {storage.vector_type} takes at most "
            f"{limit}: use {better}, --index none, or fewer --dimensions"
        )
    if storage.index == "hnsw-bq" and dimensions > MAX_BIT_DIMENSIONS:
        raise ConfigError(f"the model gives {dimensions} dimensions; a binary-quantized index takes at most "
                          f"{MAX_BIT_DIMENSIONS}")  # fmt: skip
