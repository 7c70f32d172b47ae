"""Settings of a remote embedding provider (OpenAI, Azure OpenAI, any OpenAI-compatible URL)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from vectorize.errors import ConfigError
from vectorize.rate_limits import RateLimits, tier_limits
from vectorize.secret import Secret

PROVIDERS = ("openai", "azure")
LONG_TEXT_CHOICES = ("truncate", "error")


@dataclass(frozen=True)
class KnownModel:
    dimensions: int
    accepts_dimensions: bool
    usd_per_million_tokens: float
    encoding: str = "cl100k_base"


OPENAI_MODELS = {
    "text-embedding-3-small": KnownModel(1536, True, 0.02),
    "text-embedding-3-large": KnownModel(3072, True, 0.13),
    "text-embedding-ada-002": KnownModel(1536, False, 0.10),
}
DEFAULT_REMOTE_MODEL = "text-embedding-3-small"
BATCH_PRICE_SHARE = 0.5


@dataclass(frozen=True)
class BatchApiSettings:
    """``--batch-api``: texts go to the provider's Batch API (half the price, no rate limits)."""

    poll_interval_s: float = 30.0
    wait: bool = True  # False: submit, then exit; a later run with the same command collects
    cancel: bool = False  # cancel the collection's open batches and collect what they finished
    max_attempts: int = 3  # batches a text may be sent in before it is an error row

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ConfigError("--poll-interval must be more than 0 seconds")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")


@dataclass(frozen=True)
class RemoteSettings:
    provider: str = "openai"
    model: str = DEFAULT_REMOTE_MODEL
    dimensions: int | None = None
    base_url: str | None = None
    api_key: Secret | None = field(default=None, repr=False)
    azure_endpoint: str | None = None
    azure_deployment: str | None = None
    api_version: str = "2024-10-21"
    rate_tier: str | None = None
    limits: RateLimits = field(default_factory=RateLimits)  # explicit --rpm/--tpm/--rpd/--tpd
    max_in_flight: int = 8
    max_attempts: int = 6
    timeout_s: float = 60.0
    long_text: str = "truncate"
    chars_per_token: float = 3.0  # token estimate for models tiktoken does not know
    max_input_tokens: int = 8192
    request_tokens: int | None = None  # tokens per request at most; the budget bounds it too
    price_per_million: float | None = None
    fallback: RemoteSettings | None = None
    batch: BatchApiSettings | None = None  # None: synchronous requests

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(f"--provider {self.provider!r}: choose local, {' or '.join(PROVIDERS)}")
        if self.long_text not in LONG_TEXT_CHOICES:
            raise ConfigError(f"--long-text {self.long_text!r}: choose {' or '.join(LONG_TEXT_CHOICES)}")
        if self.max_in_flight < 1 or self.max_attempts < 1:
            raise ConfigError("--max-in-flight and --max-attempts must be at least 1")
        if self.dimensions is not None and self.dimensions < 1:
            raise ConfigError("--dimensions must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError("--request-timeout must be more than 0 seconds")
        if not 1 <= self.max_input_tokens <= 300_000:
            raise ConfigError("--max-input-tokens must be between 1 and 300000")
        known = OPENAI_MODELS.get(self.model)
        if known and self.dimensions is not None and not known.accepts_dimensions:
            raise ConfigError(f"model {self.model} has a fixed size; it does not take --dimensions")
        if known and self.dimensions is not None and self.dimensions > known.dimensions:
            raise ConfigError(f"--dimensions {self.dimensions}: {self.model} has at most {known.dimensions}")
        if self.provider == "azure" and not (self.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")):
            raise ConfigError("--provider azure needs --azure-endpoint (or $AZURE_OPENAI_ENDPOINT)")
        tier_limits(self.rate_tier)
        if self.batch is not None and self.fallback is not None:
            raise ConfigError("--batch-api takes no --fallback: a batch is answered by the provider it went to")

    def search_record(self) -> dict:
        """What a search of a collection this model made needs besides the key; nothing secret."""
        endpoint = self.azure_endpoint
        if self.provider == "azure" and endpoint is None:
            endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        record = {
            "provider": self.provider,
            "model": self.model,
            "dimensions": self.dimensions,
            "base_url": self.base_url,
            "azure_endpoint": endpoint,
            "azure_deployment": self.azure_deployment,
            "api_version": self.api_version if self.provider == "azure" else None,
        }
        return {key: value for key, value in record.items() if value is not None}

    def resolved(self) -> RemoteSettings:
        """These settings with the key and endpoint read from the environment here, on the
        driver: the actors may run on nodes where those variables are not set."""
        fallback = self.fallback.resolved() if self.fallback else None
        if self.provider == "azure":
            return replace(self, api_key=self.key(), azure_endpoint=self.endpoint(), fallback=fallback)
        return replace(self, api_key=self.key(), base_url=self.endpoint(), fallback=fallback)

    @property
    def known_model(self) -> KnownModel | None:
        return OPENAI_MODELS.get(self.model)

    @property
    def rate_limits(self) -> RateLimits:
        return tier_limits(self.rate_tier).merged(self.limits)

    def key(self) -> Secret:
        """The API key: the flag, else the provider's environment variable."""
        if self.api_key:
            return self.api_key
        variable = "AZURE_OPENAI_API_KEY" if self.provider == "azure" else "OPENAI_API_KEY"
        value = os.environ.get(variable)
        if value:
            return Secret(value)
        if self.base_url:  # local OpenAI-compatible servers often need none
            return Secret("none")
        raise ConfigError(f"no API key: set ${variable} or pass --api-key")

    def endpoint(self) -> str:
        if self.provider == "azure":
            return (self.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT") or "").rstrip("/")
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")

    def batch_usd_per_million(self) -> float | None:
        """The Batch API's price: OpenAI bills its embedding models' batches at half the synchronous one."""
        price = self.usd_per_million()
        return None if price is None else price * BATCH_PRICE_SHARE

    def usd_per_million(self) -> float | None:
        if self.price_per_million is not None:
            return self.price_per_million
        return self.known_model.usd_per_million_tokens if self.known_model else None
