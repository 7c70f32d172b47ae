"""The embedding actor: one provider per actor, rows with status ``embed`` get vectors.

A batch that fails as a whole is retried text by text, so one input the model cannot take
becomes one error row and the rest of the batch is stored.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pyarrow as pa

from jobs.batch_events import BatchEvents, RunContext
from jobs.vector_rows import attach_vectors, empty_result, texts_to_embed
from vectorize.identity import ModelIdentity
from vectorize.providers.base import EmbeddedBatch, RowProblem
from vectorize.providers.local import SentenceTransformerProvider

logger = logging.getLogger(__name__)


class EmbedBatches:
    """The model loads in a background thread from the start; only a batch that has texts to
    embed waits for it, so a run where everything is already stored never pays for it."""

    def __init__(
        self,
        identity: ModelIdentity,
        model_spec: str,
        cpu_threads: int | None,
        encode_batch_size: int | None,
        device: str | None = None,
        run: RunContext | None = None,
    ) -> None:
        self.identity = identity
        self.events = BatchEvents(run)
        self._provider: SentenceTransformerProvider | None = None
        self._load_error: BaseException | None = None

        def load() -> None:
            try:
                self._provider = SentenceTransformerProvider(
                    identity, model_spec, device=device, cpu_threads=cpu_threads, batch_size=encode_batch_size
                )
            except BaseException as exc:
                self._load_error = exc

        self._loading = threading.Thread(target=load, name="load-model", daemon=True)
        self._loading.start()

    @property
    def provider(self) -> SentenceTransformerProvider:
        self._loading.join()
        if self._load_error is not None:
            raise self._load_error
        assert self._provider is not None
        return self._provider

    def _embed_each(self, texts: list[str]) -> EmbeddedBatch:
        vectors = np.zeros((len(texts), self.identity.dimensions), dtype=np.float32)
        counts, truncated, problems = [], [], []
        for i, text in enumerate(texts):
            try:
                one = self.provider.embed([text])
            except Exception as exc:  # one input the model refuses
                counts.append(0)
                truncated.append(False)
                problems.append(RowProblem("provider_error", f"{type(exc).__name__}: {exc}"))
                continue
            vectors[i] = one.vectors[0]
            counts.append(one.token_counts[0])
            truncated.append(one.truncated[0])
            problems.append(None)
        return EmbeddedBatch(vectors, counts, truncated, problems)

    def __call__(self, batch: pa.Table) -> pa.Table:
        todo, texts = texts_to_embed(batch)
        if not texts:
            self.events.record(batch.num_rows, 0, 0, 0.0)
            return attach_vectors(batch, todo, empty_result(self.identity.dimensions), self.identity.dimensions)
        provider = self.provider  # the wait for the model to load is not the batch's time
        started = time.perf_counter()
        try:
            result = provider.embed(texts)
        except Exception:
            logger.warning("a batch of %d failed; embedding its texts one by one", len(texts), exc_info=True)
            result = self._embed_each(texts)
        seconds = time.perf_counter() - started
        embedded = sum(p is None for p in result.problems) if result.problems else len(texts)
        self.events.record(batch.num_rows, embedded, sum(result.token_counts), seconds)
        return attach_vectors(batch, todo, result, self.identity.dimensions)
