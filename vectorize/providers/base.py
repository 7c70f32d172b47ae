"""The provider interface: the only one the job, Serve and the CLI see.

A :class:`ProviderSpec` is decided once, on the driver, from the run's settings: it knows the
model's identity, where it comes from, how its texts are counted in tokens, what its actors
need and which budgets its requests share. It is small and picklable, so it travels to every
embedding actor, which opens it into a :class:`Provider` there. Adding a provider is one file
with a spec and one :func:`register_provider` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vectorize.errors import ConfigError, ProviderStopError
from vectorize.identity import ModelIdentity

STOPPED = "provider_stopped"  # a text the provider refused with the run: no error row, the next run reads it again


@dataclass
class EmbeddedBatch:
    """Vectors for a list of texts, in input order, with what it cost."""

    vectors: np.ndarray  # float32, shape (n, dimensions)
    token_counts: list[int]  # tokens of each text before truncation
    truncated: list[bool]  # True where the text was cut to the model's window
    problems: list[RowProblem | None] | None = None  # why a text got no vector; None: all did
    stopped: str | None = None  # the provider refused the run while this batch was sent


@dataclass(frozen=True)
class RowProblem:
    """Why one text got no vector: a reason code for the errors table and a message."""

    reason: str
    message: str


class TokenSpans(Protocol):
    def spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of the text's tokens, in order."""
        ...

    def count(self, texts: Sequence[str]) -> list[int]:
        """The tokens of each text as the provider bills or counts them (before any cut)."""
        ...


@dataclass(frozen=True)
class ActorPlan:
    """The embedding actors of a run: how many, and what each reserves."""

    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    torch_threads: int | None
    batches_in_flight: int = 1  # batches an actor works on at once (a remote one waits on the network)
    batch_rows: int | None = None  # rows per call of an actor; None: the spec's ``default_batch_rows``


@dataclass(frozen=True)
class ActorRequest:
    """What the user asked of the actors (None: the provider decides)."""

    actors: tuple[int, int] | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    encode_batch_size: int | None = None


class Provider(Protocol):
    """A model opened in one process."""

    identity: ModelIdentity

    async def embed(self, texts: Sequence[str]) -> EmbeddedBatch:
        """Vectors for non-empty texts, float32, normalised when the model says so. Raises when
        the batch as a whole fails; a text the provider refuses alone is a ``RowProblem``."""
        ...

    async def close(self) -> None: ...


class ProviderSpec(Protocol):
    """A provider as decided for a run: picklable, never changed after it is made."""

    identity: ModelIdentity
    origin: str  # where the model is from, as the registry records it
    default_batch_rows: int  # rows per call of an embedding actor
    special_tokens: int  # tokens the model adds around every input
    service: str | None  # the address a remote provider answers on (named when a run stalls)

    def token_spans(self) -> TokenSpans:
        """How this model splits a text into tokens (for chunking)."""
        ...

    def prefix_tokens(self) -> int: ...

    def plan_actors(self, cluster: dict[str, float], asked: ActorRequest) -> ActorPlan:
        """The actors for a cluster with these resources (``CPU``, ``GPU``)."""
        ...

    def start_budgets(self, actor_options: dict) -> Any:
        """The run's shared budgets (Ray actors), or None where requests share none."""
        ...

    def open(self, threads: int | None = None, budgets: Any = None) -> Provider:
        """The provider in this process (an actor's, Serve's replica, the CLI), on ``threads``
        CPU threads where it computes, drawing on the run's ``budgets`` where it has them."""
        ...


@dataclass(frozen=True)
class ProviderRequest:
    """What the user chose: the provider's name, the model, and the remote provider's settings."""

    name: str
    model: str
    remote: Any = None  # RemoteSettings of an OpenAI-compatible provider
    probe_within_s: float | None = None  # a remote model's first answer, at most this long
    encode_batch_size: int | None = None  # texts per forward pass of a local model; None: its choice
    probe: bool = True  # False (a dry run): a remote model OpenAI documents is not asked for a vector


SpecFactory = Callable[[ProviderRequest], ProviderSpec]
_FACTORIES: dict[str, SpecFactory] = {}


def register_provider(name: str, factory: SpecFactory) -> None:
    """Make ``--provider name`` build its spec with ``factory``."""
    _FACTORIES[name] = factory


def provider_names() -> tuple[str, ...]:
    """The registered names: the built-in ones are registered by the package, which Python
    imports before this module."""
    return tuple(sorted(_FACTORIES))


def provider_spec(request: ProviderRequest) -> ProviderSpec:
    """The spec of the provider named in ``request``, its model's identity checked."""
    names = provider_names()
    factory = _FACTORIES.get(request.name)
    if factory is None:
        raise ConfigError(f"--provider {request.name!r}: choose one of {', '.join(names)}")
    return factory(request)


def is_deferred(spec: ProviderSpec) -> bool:
    """A spec may say ``deferred = True``: the pipeline then embeds nothing, the texts wait in the
    pending table, and the run's end gives them their vectors (the Batch API). A spec that says
    nothing embeds in the pipeline."""
    return bool(getattr(spec, "deferred", False))


def embed_blocking(provider: Provider, texts: Sequence[str]) -> EmbeddedBatch:
    """``provider.embed(texts)`` from code that is not async (the CLI), the provider closed after."""

    async def once() -> EmbeddedBatch:
        try:
            return await provider.embed(texts)
        finally:
            await provider.close()

    result = asyncio.run(once())
    if result.stopped is not None:
        raise ProviderStopError(result.stopped)
    return result


def as_float32_rows(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """float32 vectors, re-normalised in float32 when the model normalises (fp16 drifts)."""
    out = np.asarray(vectors, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out
