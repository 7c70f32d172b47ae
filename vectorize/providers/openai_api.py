"""OpenAI's API, or any server that speaks its ``/v1/embeddings`` protocol (``--base-url``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vectorize.secret import Secret


def redact_url(url: str) -> str:
    """``url`` without a user name or password in it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class OpenAIClientSpec:
    base_url: str
    api_key: Secret = field(repr=False)
    timeout_s: float

    @property
    def where(self) -> str:
        return redact_url(self.base_url)

    @property
    def secret(self) -> Secret:
        return self.api_key

    def create(self) -> Any:
        from openai import AsyncOpenAI

        # Retries are ours: counted, shared with every actor through the budget, and bounded.
        return AsyncOpenAI(api_key=self.api_key.reveal(), base_url=self.base_url, max_retries=0, timeout=self.timeout_s)
