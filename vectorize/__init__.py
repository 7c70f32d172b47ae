"""vectorize: batch embeddings from many sources into Postgres + pgvector, on Ray."""

__version__ = "0.1.0"
