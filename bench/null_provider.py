"""A provider that does no model work: each text's vector is read from a hash of it, so a run
measures everything but the model (reading, preparing, the skip-known lookups, the claims, the
sink). Registered as ``--provider null`` through the provider interface."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vectorize.identity import ModelIdentity
from vectorize.providers.base import ActorPlan, ActorRequest, EmbeddedBatch, ProviderRequest, register_provider
from vectorize.tokens import EstimatedCounter

DIMENSIONS = 384  # all-MiniLM-L6-v2's, so rows weigh what the default model's do
BATCH_ROWS = 1024


def hash_vectors(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors, one per text, from SHAKE-128 of its UTF-8 bytes."""
    raw = b"".join(hashlib.shake_128(t.encode("utf-8", "surrogatepass")).digest(DIMENSIONS) for t in texts)
    vectors = np.frombuffer(raw, dtype=np.uint8).reshape(len(texts), DIMENSIONS).astype(np.float32) - 127.5
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class NullProvider:
    def __init__(self, identity: ModelIdentity) -> None:
        self.identity = identity

    async def embed(self, texts: Sequence[str]) -> EmbeddedBatch:
        return EmbeddedBatch(hash_vectors(texts), [len(t) // 4 + 2 for t in texts], [False] * len(texts))

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class NullSpec:
    identity: ModelIdentity
    origin: str = "null:shake128"
    default_batch_rows: int = BATCH_ROWS
    special_tokens: int = 0
    service: str | None = None

    def token_spans(self) -> EstimatedCounter:
        return EstimatedCounter(chars_per_token=4)

    def prefix_tokens(self) -> int:
        return 0

    def plan_actors(self, cluster: dict[str, float], asked: ActorRequest) -> ActorPlan:
        """One actor per core: preparation runs fused into the actors' processes."""
        count = max(1, int(cluster.get("CPU", 1)))
        low, high = asked.actors or (count, count)
        return ActorPlan(low, high, asked.cpus_per_actor or 0.25, 0.0, None)

    def start_budgets(self, actor_options: dict) -> None:
        return None

    def open(self, threads: int | None = None, budgets: object = None) -> NullProvider:
        return NullProvider(self.identity)


def null_spec(request: ProviderRequest) -> NullSpec:
    return NullSpec(ModelIdentity("null", "shake128", DIMENSIONS, True, "", 1_000_000))


def register() -> str:
    """Register ``null`` here and ship this module to Ray's workers by value (they do not have
    ``bench/`` on their path)."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    register_provider("null", null_spec)
    return "null"
