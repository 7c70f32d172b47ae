"""The OpenAI-compatible provider (``--provider openai``, and ``azure`` through Azure's client):
its identity (probed once), its client, its budget.

In a run, the embedding actors share the run's budget actors; opened elsewhere (``vectorize
search``) the provider has a budget of its own, in its process.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vectorize.errors import ConfigError, ModelMismatchError, ProviderStopError
from vectorize.identity import ModelIdentity
from vectorize.providers.azure_openai import AzureClientSpec
from vectorize.providers.base import (
    ActorPlan,
    ActorRequest,
    EmbeddedBatch,
    ProviderRequest,
    register_provider,
)
from vectorize.providers.openai_api import OpenAIClientSpec
from vectorize.providers.openai_errors import api_failure
from vectorize.providers.remote import ClientSpec, RemoteRequests, RequestPolicy
from vectorize.rate_limits import RateLimits
from vectorize.remote_settings import PROVIDERS, KnownModel, RemoteSettings
from vectorize.shared_limiter import Budget, Limiter, RunBudgets
from vectorize.tokens import EstimatedCounter, TiktokenCounter, TokenCounter

logger = logging.getLogger(__name__)

_PROBE_TEXT = "vectorize probe"
_PROBE_ATTEMPTS = 3


def client_spec(settings: RemoteSettings) -> ClientSpec:
    if settings.provider == "azure":
        return AzureClientSpec(
            settings.endpoint(), request_model(settings), settings.api_version, settings.key(), settings.timeout_s
        )
    return OpenAIClientSpec(settings.endpoint(), settings.key(), settings.timeout_s)


def request_model(settings: RemoteSettings) -> str:
    """What requests name as ``model``: the Azure deployment, or the model."""
    if settings.provider == "azure":
        return settings.azure_deployment or settings.model
    return settings.model


def token_counter(settings: RemoteSettings) -> TokenCounter:
    known = settings.known_model
    return TiktokenCounter(known.encoding) if known else EstimatedCounter(settings.chars_per_token)


def request_tokens(settings: RemoteSettings) -> int:
    """Tokens per request, at most: what was asked, else what the API takes; the run's budget
    bounds it further (``RateBudget.request_tokens``). A longer input goes alone."""
    wanted = settings.request_tokens if settings.request_tokens is not None else 300_000
    return max(1, min(300_000, wanted))


def build_requests(
    settings: RemoteSettings, identity: ModelIdentity, budget: Budget, fallback_budget: Budget | None = None
) -> RemoteRequests:
    fallback = None
    if settings.fallback is not None:
        assert fallback_budget is not None, "a fallback needs a budget of its own"
        fallback = build_requests(settings.fallback, identity, fallback_budget)
    return RemoteRequests(
        client_spec(settings),
        request_model(settings),
        identity,
        send_dimensions=settings.dimensions is not None,
        counter=token_counter(settings),
        policy=RequestPolicy(
            max_input_tokens=settings.max_input_tokens,
            long_text=settings.long_text,
            max_attempts=settings.max_attempts,
        ),
        budget=budget,
        request_tokens=request_tokens(settings),
        fallback=fallback,
    )


async def _bounded_probe(settings: RemoteSettings, within_s: float | None) -> np.ndarray:
    try:
        return await asyncio.wait_for(_probe_vector(settings), within_s if within_s and within_s > 0 else None)
    except TimeoutError:
        raise ConfigError(
            f"{client_spec(settings).where} did not answer the first request within {within_s:g} s "
            "(a run's start, or --stall-timeout if longer): check that it is up and serves embeddings"
        ) from None


async def _probe_vector(settings: RemoteSettings) -> np.ndarray:

    spec = client_spec(settings)
    extra = {"dimensions": settings.dimensions} if settings.dimensions is not None else {}
    model = request_model(settings)
    client = spec.create()
    try:
        for attempt in range(_PROBE_ATTEMPTS):
            try:
                raw = await client.embeddings.with_raw_response.create(
                    input=[_PROBE_TEXT], model=model, encoding_format="base64", **extra
                )
                first = raw.parse().data[0].embedding
                if isinstance(first, str):
                    return np.frombuffer(base64.b64decode(first), dtype="<f4")
                return np.asarray(first, dtype=np.float32)
            except Exception as exc:
                failure = api_failure(exc, spec.where, model, spec.secret.scrub)
                if failure.refusal:
                    raise ProviderStopError(failure.refusal) from None
                problem = failure.message
            await asyncio.sleep(0.5 * 2**attempt)
        raise ConfigError(f"the first request failed {_PROBE_ATTEMPTS} times: {problem}")
    finally:
        await client.close()


def check_batch_api(settings: RemoteSettings) -> None:
    """One line before any work where the server has no Batch API (404 on its files)."""
    from vectorize.providers.batch_client import BatchClient

    async def check() -> None:
        client = BatchClient(client_spec(settings), request_model(settings), "")
        try:
            await client.check_available()
        finally:
            await client.close()

    asyncio.run(check())


def remote_identity(settings: RemoteSettings, within_s: float | None = None) -> ModelIdentity:
    """The model identity of a remote model, checked with one small request (which also checks
    the endpoint, the key and the model before any work), its retries included given at most
    ``within_s`` seconds (the bound on the run's start)."""
    vector = asyncio.run(_bounded_probe(settings, within_s))
    known = settings.known_model
    expected = settings.dimensions or (known.dimensions if known else None)
    if expected is not None and vector.size != expected:
        raise ConfigError(f"{settings.model} answered with {vector.size} dimensions, expected {expected}")
    norm = float(np.linalg.norm(vector))
    return ModelIdentity(
        name=settings.model,
        revision=f"api:{settings.model}",
        dimensions=int(vector.size),
        normalized=bool(known) or abs(norm - 1.0) < 1e-3,
        prefix="",
        max_tokens=settings.max_input_tokens,
    )


def documented_identity(settings: RemoteSettings, known: KnownModel) -> ModelIdentity:
    """The identity a probe of an OpenAI model gives, from its documented size."""
    return ModelIdentity(
        name=settings.model,
        revision=f"api:{settings.model}",
        dimensions=settings.dimensions or known.dimensions,
        normalized=True,
        prefix="",
        max_tokens=settings.max_input_tokens,
    )


def check_fallback(primary: ModelIdentity, fallback: RemoteSettings, within_s: float | None = None) -> None:
    """A fallback is accepted only when it gives the same model identity: one collection never
    holds two models' vectors."""
    theirs = remote_identity(fallback, within_s)
    if not theirs.same_model(primary):
        raise ModelMismatchError(
            f"the fallback ({fallback.provider} {fallback.model}) is not the same model as the primary "
            f"({primary.name}): {'; '.join(theirs.differences(primary))}"
        )


REMOTE_ACTORS = 2  # each keeps many requests in flight; more actors add parallel packing and decoding
REMOTE_ACTOR_CPUS = 0.25
REMOTE_BATCHES_IN_FLIGHT = 4  # an actor's requests keep flowing while one batch waits for its slowest answer
BATCH_ROWS = 256  # rows per actor call: packed into requests by tokens; smaller spreads rows over the actors


class RemoteProvider:
    """The remote model behind the provider interface. Its requests (and the SDK client they
    use) are made on the event loop that first uses them."""

    def __init__(self, settings: RemoteSettings, identity: ModelIdentity, budgets: RunBudgets | None) -> None:
        self.settings = settings
        self.identity = identity
        self.budgets = budgets
        self._requests: RemoteRequests | None = None

    def requests(self) -> RemoteRequests:
        if self._requests is None:
            if self.budgets is not None:
                budget, fallback_budget = self.budgets.clients()
            else:
                budget = Limiter(self.settings.rate_limits, self.settings.max_in_flight)
                fallback_budget = Limiter(RateLimits(), self.settings.max_in_flight) if self.settings.fallback else None
            self._requests = build_requests(self.settings, self.identity, budget, fallback_budget)
        return self._requests

    async def embed(self, texts: Sequence[str]) -> EmbeddedBatch:
        return await self.requests().embed(texts)

    async def close(self) -> None:
        if self._requests is not None:
            await self._requests.close()


@dataclass(frozen=True)
class RemoteSpec:
    settings: RemoteSettings  # its key and endpoint read on the driver
    identity: ModelIdentity
    default_batch_rows: int = BATCH_ROWS
    special_tokens: int = 0

    @classmethod
    def resolve(cls, request: ProviderRequest) -> RemoteSpec:
        """The spec, after one small request checked the endpoint, the key and the model (and
        the fallback's, which must be the same model) within ``request.probe_within_s``."""
        settings = request.remote
        if settings is None:
            settings = RemoteSettings(provider=request.name, model=request.model)
        settings = settings.resolved()
        known = settings.known_model
        if not request.probe and known is not None:
            return cls(settings, documented_identity(settings, known))
        identity = remote_identity(settings, request.probe_within_s)
        if settings.fallback is not None:
            check_fallback(identity, settings.fallback, request.probe_within_s)
        if settings.batch is not None:
            check_batch_api(settings)
        return cls(settings, identity)

    @property
    def deferred(self) -> bool:
        """Through the Batch API: the pipeline leaves the texts to embed for the run's end."""
        return self.settings.batch is not None

    @property
    def origin(self) -> str:
        return f"{self.settings.provider}:{self.settings.model} at {client_spec(self.settings).where}"

    @property
    def service(self) -> str:
        return self.settings.endpoint()

    def token_spans(self) -> TokenCounter:
        return token_counter(self.settings)

    def prefix_tokens(self) -> int:
        return 0

    def plan_actors(self, cluster: dict[str, float], asked: ActorRequest) -> ActorPlan:
        """Actors that wait on the network: a quarter CPU each unless told."""
        low, high = asked.actors or (REMOTE_ACTORS, REMOTE_ACTORS)
        cpus = asked.cpus_per_actor or REMOTE_ACTOR_CPUS
        return ActorPlan(low, high, cpus, 0.0, None, batches_in_flight=REMOTE_BATCHES_IN_FLIGHT)

    def start_budgets(self, actor_options: dict) -> RunBudgets | None:
        if self.deferred:  # a batch's requests are not rate-limited
            return None
        return RunBudgets.start(self.settings, **actor_options)

    def open(self, threads: int | None = None, budgets: RunBudgets | None = None) -> RemoteProvider:
        return RemoteProvider(self.settings, self.identity, budgets)


for _name in PROVIDERS:
    register_provider(_name, RemoteSpec.resolve)
