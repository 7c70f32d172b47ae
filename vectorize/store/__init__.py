"""The pgvector store: collection tables, the model registry, writes, runs and search."""
