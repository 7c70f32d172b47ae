"""The model behind the endpoints: the batch job's own provider, a cache in front of it, and
Serve's dynamic batching gathering concurrent requests into one model call."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ray import serve

from serve.api_errors import ApiError
from serve.cache import VectorCache
from serve.metrics import ModelFigures
from vectorize.providers.base import ProviderSpec, as_float32_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFailure:
    """A request the model failed on, answered alone: its own 400, not its batch's."""

    message: str
    server: bool = False  # every request of the batch failed alone too: the model's fault, a 500


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class ServedModel:
    def __init__(
        self,
        spec: ProviderSpec,
        *,
        threads: int | None,
        cache_size: int,
        matryoshka: bool,
    ) -> None:
        self.identity = spec.identity
        self.provider = spec.open(threads)
        self.cache = VectorCache(cache_size)
        self.matryoshka = matryoshka
        self.calls, self.texts_embedded, self.model_seconds = 0, 0, 0.0

    @classmethod
    def for_replica(cls, model: str, *, threads: int | None, cache_size: int, matryoshka: bool) -> ServedModel:
        """The local ``model`` in a Serve replica: torch threads as given, else the CPUs the
        replica was given (``VECTORIZE_REPLICA_CPUS``)."""
        from vectorize.providers.base import ProviderRequest, provider_spec

        threads = threads or max(1, int(float(os.environ.get("VECTORIZE_REPLICA_CPUS", "1"))))
        spec = provider_spec(ProviderRequest("local", model))
        return cls(spec, threads=threads, cache_size=cache_size, matryoshka=matryoshka)

    def figures(self) -> ModelFigures:
        cache = self.cache
        return ModelFigures(self.identity.name, self.calls, self.texts_embedded, self.model_seconds, cache.hits,
                            cache.misses, len(cache))  # fmt: skip

    max_batch_texts = 64
    batch_wait_s = 0.0

    def configure(self, max_batch_texts: int, batch_wait_s: float, cache_size: int) -> None:
        self.max_batch_texts = max_batch_texts
        self.batch_wait_s = batch_wait_s
        self._embed_batched.set_max_batch_size(max_batch_texts)
        self._embed_batched.set_batch_wait_timeout_s(0.0)  # see _embed_batched
        self.cache.resize(cache_size)

    async def embed(self, texts: Sequence[str], dimensions: int | None = None) -> tuple[np.ndarray, int]:
        """Vectors for ``texts`` in order, and the tokens they took."""
        dims = self._check_dimensions(dimensions)
        key = self.identity.key
        found = [self.cache.get(key, t) for t in texts]
        missing = [t for t, f in zip(texts, found, strict=True) if f is None]
        if missing:
            unique = list(dict.fromkeys(missing))
            size = self.max_batch_texts  # a request larger than a batch goes as several
            parts = await asyncio.gather(
                *(self._embed_batched(unique[i : i + size]) for i in range(0, len(unique), size))
            )
            for part in parts:
                if isinstance(part, ModelFailure) and part.server:
                    raise ApiError(500, f"the model failed: {part.message}", type="server_error")
                if isinstance(part, ModelFailure):
                    raise ApiError(400, f"the model cannot embed this input: {part.message}", param="input",
                                   code="input_rejected")  # fmt: skip
            fresh = {text: found for part in parts for text, found in part.items()}
            for text, (vector, tokens) in fresh.items():
                self.cache.put(key, text, vector, tokens)
            found = [f if f is not None else fresh[t] for t, f in zip(texts, found, strict=True)]
        vectors = np.stack([f[0] for f in found])
        tokens = sum(min(f[1], self.identity.max_tokens) for f in found)
        return self._truncate(vectors, dims), tokens

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, batch_size_fn=lambda items: sum(len(i) for i in items))
    async def _embed_batched(self, requests: list[list[str]]) -> list[dict[str, tuple[np.ndarray, int]] | ModelFailure]:
        texts = list(dict.fromkeys(t for request in requests for t in request))
        self.calls += 1
        self.texts_embedded += len(texts)
        started = time.perf_counter()
        # On the event loop, not in a thread: the loop then parses the requests that arrive
        # meanwhile only after the call, as the next batch, instead of taking the interpreter
        # lock from the model between its operations (a third fewer requests a second in a
        # thread, measured with bench/serve_latency.py).
        try:
            result = await self.provider.embed(texts)
        except Exception as exc:  # one request's input: answer each alone, so only that one fails
            logger.warning("the model failed on a batch of %d requests (%s); answering them one by one",
                           len(requests), _first_line(exc))  # fmt: skip
            self._embed_batched.set_batch_wait_timeout_s(0.0)
            answers = [await self._embed_alone(request) for request in requests]
            if len(answers) > 1 and all(isinstance(a, ModelFailure) for a in answers):  # the model, not an input
                return [ModelFailure(a.message, server=True) for a in answers]
            return answers
        self.model_seconds += time.perf_counter() - started
        # A lone request is answered at once; when requests arrive together, the next batch
        # waits up to batch_wait_s for the others (the requests answered now come back then).
        self._embed_batched.set_batch_wait_timeout_s(self.batch_wait_s if len(requests) > 1 else 0.0)
        by_text = {t: (result.vectors[i], result.token_counts[i]) for i, t in enumerate(texts)}
        return [{t: by_text[t] for t in request} for request in requests]

    async def _embed_alone(self, request: list[str]) -> dict[str, tuple[np.ndarray, int]] | ModelFailure:
        texts = list(dict.fromkeys(request))
        try:
            result = await self.provider.embed(texts)
        except Exception as exc:
            logger.warning("the model failed on a request of %d texts: %s", len(texts), _first_line(exc))
            return ModelFailure(_first_line(exc))
        return {t: (result.vectors[i], result.token_counts[i]) for i, t in enumerate(texts)}

    def _check_dimensions(self, dimensions: int | None) -> int:
        native = self.identity.dimensions
        if dimensions is None or dimensions == native:
            return native
        if not self.matryoshka:
            raise ApiError(400, f"this model gives {native} dimensions and cannot be shortened", param="dimensions")
        if dimensions > native:
            raise ApiError(400, f"'dimensions' may be at most {native}", param="dimensions")
        return dimensions

    def _truncate(self, vectors: np.ndarray, dims: int) -> np.ndarray:
        if dims == vectors.shape[1]:
            return vectors
        return as_float32_rows(np.ascontiguousarray(vectors[:, :dims]), normalize=True)
