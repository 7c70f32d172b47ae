"""The embedding actor for a remote API: an async actor whose requests all draw on the run's
shared budget. Ray Data gives it several batches at once, so its requests keep flowing while
one batch waits for its slowest answer."""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from jobs.batch_events import BatchEvents, RunContext
from jobs.vector_rows import attach_vectors, empty_result, texts_to_embed
from vectorize.identity import ModelIdentity
from vectorize.providers.api import build_embedder
from vectorize.providers.remote import STOPPED, RemoteEmbedder
from vectorize.remote_settings import RemoteSettings
from vectorize.shared_limiter import RayLimiterClient

logger = logging.getLogger(__name__)


class EmbedRemoteBatches:
    def __init__(
        self,
        identity: ModelIdentity,
        settings: RemoteSettings,
        limiter,
        fallback_limiter=None,
        run: RunContext | None = None,
    ) -> None:
        self.identity = identity
        self.events = BatchEvents(run)
        self.settings = settings
        self.limiter = limiter
        self.fallback_limiter = fallback_limiter
        self._embedder: RemoteEmbedder | None = None

    def _get_embedder(self) -> RemoteEmbedder:
        if self._embedder is None:  # built on the event loop that uses it
            fallback = RayLimiterClient(self.fallback_limiter) if self.fallback_limiter is not None else None
            self._embedder = build_embedder(self.settings, self.identity, RayLimiterClient(self.limiter), fallback)
        return self._embedder

    async def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with its vectors. Once the provider refuses the run (a key, quota, per-day
        cap), the texts it answered are still returned, to be written, and those it refused are
        left out, for the next run to read again; the run's driver then stops the run."""
        dims = self.identity.dimensions
        todo, texts = texts_to_embed(batch)
        started = time.perf_counter()
        result = await self._get_embedder().embed(texts) if texts else empty_result(dims)
        embedded = sum(p is None for p in result.problems) if result.problems else len(texts)
        self.events.record(batch.num_rows, embedded, sum(result.token_counts), time.perf_counter() - started)
        table = attach_vectors(batch, todo, result, dims)
        if result.stopped is None:
            return table
        return table.filter(pc.invert(pc.fill_null(pc.equal(table.column("reason"), STOPPED), False)))
