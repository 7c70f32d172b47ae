"""The embedding actor: it opens the run's provider and gives the rows with status ``embed``
their vectors. One class for every provider; the provider's spec says what an actor needs.

A batch that fails as a whole is retried text by text, so one input the model cannot take
becomes one error row and the rest of the batch is stored. Once the provider refuses the run
(a key, quota, per-day cap), the texts it answered are still returned, to be written, and those
it refused are left out, for the next run to read again; the run's driver then stops the run.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.batch_events import BatchEvents, RunContext
from jobs.vector_rows import attach_vectors, empty_result, texts_to_embed
from vectorize.providers.base import STOPPED, ActorPlan, EmbeddedBatch, Provider, ProviderSpec, RowProblem

logger = logging.getLogger(__name__)


class EmbedBatches:
    """The provider opens at the first batch that has texts to embed, so a run where everything
    is already stored never imports or loads a model; where the run surely has texts to embed
    (``RunContext.open_early``), it opens on a thread as the actor starts, while the first
    blocks are read and prepared."""

    def __init__(self, spec: ProviderSpec, plan: ActorPlan, budgets: object = None, run: RunContext | None = None):
        self.identity = spec.identity
        self.events = BatchEvents(run)
        self._spec, self._threads, self._budgets = spec, plan.torch_threads, budgets
        self._provider: Provider | None = None
        self._open_error: BaseException | None = None
        self._opening = threading.Lock()
        if run is not None and run.open_early:
            threading.Thread(target=self._open, name="open-provider", daemon=True).start()

    def _open(self) -> None:
        with self._opening:  # concurrent batches of one actor wait for one opening
            if self._provider is None and self._open_error is None:
                try:
                    self._provider = self._spec.open(self._threads, self._budgets)
                except BaseException as exc:
                    self._open_error = exc

    @property
    def provider(self) -> Provider:
        self._open()
        if self._open_error is not None:
            raise self._open_error
        assert self._provider is not None
        return self._provider

    async def _embed_each(self, provider: Provider, texts: list[str]) -> EmbeddedBatch:
        vectors = np.zeros((len(texts), self.identity.dimensions), dtype=np.float32)
        counts, truncated, problems = [], [], []
        for i, text in enumerate(texts):
            try:
                one = await provider.embed([text])
            except Exception as exc:  # one input the model refuses
                counts.append(0)
                truncated.append(False)
                problems.append(RowProblem("provider_error", f"{type(exc).__name__}: {exc}"))
                continue
            vectors[i] = one.vectors[0]
            counts.append(one.token_counts[0])
            truncated.append(one.truncated[0])
            problems.append(one.problems[0] if one.problems else None)
        return EmbeddedBatch(vectors, counts, truncated, problems)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        dims = self.identity.dimensions
        todo, texts = texts_to_embed(batch)
        if not texts:
            self.events.record(batch.num_rows, 0, 0, 0.0)
            return attach_vectors(batch, todo, empty_result(dims), dims)
        provider = self.provider  # opening the provider is not the batch's time
        started = time.perf_counter()
        try:
            result = await provider.embed(texts)
        except Exception:
            logger.warning("a batch of %d failed; embedding its texts one by one", len(texts), exc_info=True)
            result = await self._embed_each(provider, texts)
        embedded = sum(p is None for p in result.problems) if result.problems else len(texts)
        self.events.record(batch.num_rows, embedded, sum(result.token_counts), time.perf_counter() - started)
        table = attach_vectors(batch, todo, result, dims)
        if result.stopped is None:
            return table
        return table.filter(pc.invert(pc.fill_null(pc.equal(table.column("reason"), STOPPED), False)))
