"""The stored texts nearest to a query, by the collection's vector index, by its keyword index,
or by both rankings fused (reciprocal rank fusion).

A metadata filter that few rows match (as the planner's statistics expect) is answered exactly
over those rows; one that many match is applied inside the index scan: pgvector's iterative
scan goes on past ``hnsw.ef_search`` until ``k`` rows that match are found (or
``hnsw.max_scan_tuples`` were looked at), and the rows it returns in a relaxed order are sorted
again. A binary-quantized index gives candidates by Hamming distance, re-ranked by exact cosine
distance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from vectorize.errors import ConfigError
from vectorize.store.collection import Collection
from vectorize.store.storage import Storage

SEARCH_MODES = ("vector", "keyword", "hybrid")
RRF_K = 60  # reciprocal rank fusion's constant: a hit's score is the sum of 1 / (RRF_K + its rank)
MIN_CANDIDATES = 40  # each ranking's candidates for fusion
MIN_EF_SEARCH = 100  # pgvector's default of 40 misses more of the true nearest (bench/search.py)
BQ_CANDIDATES_PER_HIT = 40  # a binary index's candidates re-ranked by exact distance
MAX_EF_SEARCH = 1000  # pgvector's limit
# A filter expected to match fewer rows than this is answered exactly over those rows (found by
# the metadata index): cheaper there than an index scan stepping past the many that do not match.
EXACT_BELOW_ROWS = 2000


@dataclass
class Hit:
    id: str
    chunk: int
    similarity: float  # cosine similarity to the query
    text: str
    metadata: dict
    score: float | None = None  # the mode's own score: similarity, keyword rank, or fused

    def to_dict(self, digits: int | None = None) -> dict:
        def rounded(value: float | None) -> float | None:
            return value if digits is None or value is None else round(value, digits)

        return {
            "id": self.id,
            "chunk": self.chunk,
            "similarity": rounded(self.similarity),
            "score": rounded(self.score),
            "text": self.text,
            "metadata": self.metadata,
        }


def nearest(
    conn,
    collection: Collection,
    storage: Storage,
    vector: np.ndarray,
    k: int,
    where: dict | None = None,
    mode: str = "vector",
    words: str = "",
) -> list[Hit]:
    """The ``k`` best rows for the query ``vector`` (and its ``words``, in keyword and hybrid
    modes); ``where``: metadata key: value pairs every hit must have."""
    if mode != "vector" and not storage.keyword_search:
        raise ConfigError(
            f"collection {collection.name!r} was made without keyword search (--text-search none): search it "
            f"with --mode vector, or add the keyword index with `vectorize migrate --table {collection.name} "
            "--text-search simple`"
        )
    if mode != "vector" and not _has_keyword_index(conn, collection):
        raise ConfigError(
            f"collection {collection.name!r} was made before keyword search: run `vectorize run` on it once "
            "to add its keyword index, or search with --mode vector"
        )
    query = np.asarray(vector, dtype=np.float32)
    dims = int(query.shape[0])
    candidates = max(MIN_CANDIDATES, k)
    params = {
        "q": query,
        "k": k,
        "n": candidates,
        "bq": min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, k * BQ_CANDIDATES_PER_HIT)),
        "where": json.dumps(where or {}),
        "words": words,
        "config": storage.text_search,
    }
    exact = bool(where) and _estimated_matches(conn, collection, params["where"]) < EXACT_BELOW_ROWS
    parts = _Parts(collection.table, storage, dims, bool(where), exact)
    if mode == "vector":
        statement = sql.SQL(
            """WITH semantic AS MATERIALIZED ({semantic})
               SELECT t.id, t.chunk, 1 - s.distance, t.text, t.metadata, 1 - s.distance
               FROM semantic s JOIN {t} t USING (id, chunk) ORDER BY s.distance, t.id, t.chunk LIMIT %(k)s"""
        ).format(semantic=parts.semantic(sql.SQL("%(k)s")), t=collection.table)
    elif mode == "keyword":
        statement = sql.SQL(
            """WITH keyword AS MATERIALIZED ({keyword})
               SELECT t.id, t.chunk, 1 - (t.embedding <=> {q}), t.text, t.metadata, w.score
               FROM keyword w JOIN {t} t USING (id, chunk) ORDER BY w.score DESC, t.id, t.chunk LIMIT %(k)s"""
        ).format(keyword=parts.keyword(sql.SQL("%(k)s")), t=collection.table, q=parts.query)
    else:
        statement = sql.SQL(
            """WITH semantic AS MATERIALIZED (
                 SELECT id, chunk, row_number() OVER (ORDER BY distance, id, chunk) AS rank FROM ({semantic}) s),
               keyword AS MATERIALIZED (
                 SELECT id, chunk, row_number() OVER (ORDER BY score DESC, id, chunk) AS rank FROM ({keyword}) w),
               fused AS (
                 SELECT id, chunk, s.rank AS semantic_rank, w.rank AS keyword_rank,
                        coalesce(1.0 / ({rrf} + s.rank), 0) + coalesce(1.0 / ({rrf} + w.rank), 0) AS score
                 FROM semantic s FULL JOIN keyword w USING (id, chunk))
               SELECT t.id, t.chunk, 1 - (t.embedding <=> {q}), t.text, t.metadata, f.score
               FROM fused f JOIN {t} t USING (id, chunk)
               ORDER BY f.score DESC, f.keyword_rank NULLS LAST, f.semantic_rank NULLS LAST
               LIMIT %(k)s"""
        ).format(
            semantic=parts.semantic(sql.SQL("%(n)s")),
            keyword=parts.keyword(sql.SQL("%(n)s")),
            rrf=sql.Literal(RRF_K),
            t=collection.table,
            q=parts.query,
        )
    with conn.transaction():
        ef_search = params["bq"] if storage.index == "hnsw-bq" else min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, k))
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
        if where and not exact and _has_iterative_scan(conn):
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        found = conn.execute(statement, params).fetchall()
    return [Hit(i, c, float(s), t, m, float(score)) for i, c, s, t, m, score in found]


def _has_iterative_scan(conn) -> bool:
    """pgvector 0.8 and later scan an index on past ``ef_search``; before, a filter applies to
    the candidates the scan found."""
    found = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return found is not None and tuple(int(part) for part in found[0].split(".")[:2]) >= (0, 8)


def _has_keyword_index(conn, collection: Collection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'text_search'",
            (collection.regclass(),),
        ).fetchone()
        is not None
    )


def _estimated_matches(conn, collection: Collection, where: str) -> float:
    """How many rows the planner expects a filter to match, from the column's statistics:
    counting them would visit a heap page per match."""
    plan = conn.execute(
        sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {t} WHERE metadata @> %s::jsonb").format(t=collection.table),
        (where,),
    ).fetchone()[0]
    return float(plan[0]["Plan"]["Plan Rows"])


@dataclass(frozen=True)
class _Parts:
    """The pieces of one collection's search statements."""

    table: sql.Identifier
    storage: Storage
    dimensions: int
    filtered: bool
    exact: bool  # the few matching rows taken first, then ordered by exact distance

    @property
    def query(self) -> sql.Composed:
        return sql.SQL("%(q)s::{}").format(self.storage.column_type(self.dimensions))

    @property
    def condition(self) -> sql.Composable:
        return sql.SQL("metadata @> %(where)s::jsonb") if self.filtered else sql.SQL("true")

    def semantic(self, limit: sql.Composable) -> sql.Composed:
        """(id, chunk, distance) of the ``limit`` nearest rows, nearest first."""
        if self.exact:  # OFFSET 0 keeps the planner from ordering by the vector index instead
            return sql.SQL(
                """SELECT id, chunk, distance
                   FROM (SELECT id, chunk, embedding <=> {q} AS distance FROM {t} WHERE {cond} OFFSET 0) matching
                   ORDER BY distance LIMIT {limit}"""
            ).format(q=self.query, t=self.table, cond=self.condition, limit=limit)
        if self.storage.index == "hnsw-bq":
            bits = sql.SQL("bit({})").format(sql.Literal(self.dimensions))
            return sql.SQL(
                """SELECT c.id, c.chunk, t.embedding <=> {q} AS distance
                   FROM (SELECT id, chunk FROM {t} WHERE {cond}
                         ORDER BY binary_quantize(embedding)::{bits} <~> binary_quantize({q})::{bits}
                         LIMIT %(bq)s) c
                   JOIN {t} t USING (id, chunk) ORDER BY distance LIMIT {limit}"""
            ).format(q=self.query, t=self.table, cond=self.condition, bits=bits, limit=limit)
        return sql.SQL(
            """SELECT id, chunk, embedding <=> {q} AS distance FROM {t} WHERE {cond}
               ORDER BY embedding <=> {q} LIMIT {limit}"""
        ).format(q=self.query, t=self.table, cond=self.condition, limit=limit)

    def keyword(self, limit: sql.Composable) -> sql.Composed:
        """(id, chunk, score) of the ``limit`` rows that best match the query's words."""
        return sql.SQL(
            """SELECT id, chunk, ts_rank_cd(text_search, words) AS score
               FROM {t}, websearch_to_tsquery(%(config)s::regconfig, %(words)s) AS words
               WHERE text_search @@ words AND {cond} ORDER BY score DESC LIMIT {limit}"""
        ).format(t=self.table, cond=self.condition, limit=limit)
