"""The embedding actor: one provider per actor, rows with status ``embed`` get vectors.

A batch that fails as a whole is retried text by text, so one input the model cannot take
becomes one error row and the rest of the batch is stored.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorize import rows
from vectorize.identity import ModelIdentity
from vectorize.providers.base import EmbeddedBatch
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
        encode_batch_size: int,
        device: str | None = None,
    ) -> None:
        self.identity = identity
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

    def _embed_each(self, texts: list[str]) -> tuple[EmbeddedBatch, list[str | None]]:
        dims = self.identity.dimensions
        vectors = np.zeros((len(texts), dims), dtype=np.float32)
        counts, truncated, problems = [], [], []
        for i, text in enumerate(texts):
            try:
                one = self.provider.embed([text])
            except Exception as exc:  # one input the model refuses
                counts.append(0)
                truncated.append(False)
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            vectors[i] = one.vectors[0]
            counts.append(one.token_counts[0])
            truncated.append(one.truncated[0])
            problems.append(None)
        return EmbeddedBatch(vectors, counts, truncated), problems

    def __call__(self, batch: pa.Table) -> pa.Table:
        dims = self.identity.dimensions
        n = batch.num_rows
        todo = np.flatnonzero(pc.equal(batch.column("status"), rows.EMBED).to_numpy(zero_copy_only=False))
        texts = batch.column("text").take(pa.array(todo, pa.int64())).to_pylist() if len(todo) else []
        problems: list[str | None] = [None] * len(texts)
        if texts:
            try:
                result = self.provider.embed(texts)
            except Exception:
                logger.warning("a batch of %d failed; embedding its texts one by one", len(texts), exc_info=True)
                result, problems = self._embed_each(texts)
        else:
            result = EmbeddedBatch(np.zeros((0, dims), np.float32), [], [])
        bad_vector = ~np.isfinite(result.vectors).all(axis=1) if len(texts) else np.zeros(0, bool)

        values = np.zeros((n, dims), dtype=np.float32)
        has_vector = np.zeros(n, dtype=bool)
        tokens = np.zeros(n, dtype=np.int32)
        truncated = np.zeros(n, dtype=bool)
        status = batch.column("status").to_pylist()
        stage, reason, message = (batch.column(c).to_pylist() for c in ("stage", "reason", "message"))
        raw = batch.column("raw").to_pylist()
        text_col = batch.column("text").to_pylist()
        for j, i in enumerate(todo):
            problem = problems[j] or ("the model returned NaN or infinity" if bad_vector[j] else None)
            if problem:
                status[i], stage[i], raw[i] = rows.ERROR, "embed", text_col[i]
                reason[i] = "provider_error" if problems[j] else "bad_vector"
                message[i] = problem
                continue
            values[i] = result.vectors[j]
            has_vector[i] = True
            tokens[i] = result.token_counts[j]
            truncated[i] = result.truncated[j]
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dims, mask=pa.array(~has_vector))
        out = batch
        for name, column in (
            ("status", status),
            ("stage", stage),
            ("reason", reason),
            ("message", message),
            ("raw", raw),
        ):
            out = out.set_column(out.schema.get_field_index(name), name, pa.array(column, pa.string()))
        return (
            out.append_column(pa.field("embedding", pa.list_(pa.float32(), dims)), embedding)
            .append_column("tokens", pa.array(tokens))
            .append_column("truncated", pa.array(truncated))
        )
