"""Embedding providers: one file per provider, all behind :class:`EmbeddingProvider`."""

from __future__ import annotations

from vectorize.providers.base import EmbeddedBatch, EmbeddingProvider

__all__ = ["EmbeddedBatch", "EmbeddingProvider"]
