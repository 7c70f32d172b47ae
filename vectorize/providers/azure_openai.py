"""Azure OpenAI: a deployment of an OpenAI model on an Azure endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vectorize.providers.openai_api import redact_url
from vectorize.secret import Secret


@dataclass(frozen=True)
class AzureClientSpec:
    endpoint: str
    deployment: str
    api_version: str
    api_key: Secret = field(repr=False)
    timeout_s: float

    @property
    def where(self) -> str:
        return f"{redact_url(self.endpoint)} (deployment {self.deployment})"

    @property
    def secret(self) -> Secret:
        return self.api_key

    def create(self) -> Any:
        from openai import AsyncAzureOpenAI

        return AsyncAzureOpenAI(
            api_key=self.api_key.reveal(),
            azure_endpoint=self.endpoint,
            azure_deployment=self.deployment,
            api_version=self.api_version,
            max_retries=0,
            timeout=self.timeout_s,
        )
