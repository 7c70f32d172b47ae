"""The Batch API through the ``openai`` SDK: request files uploaded, batches created, found,
polled and cancelled, their output files read. A call that fails is retried with backoff; one
the server refuses, or that keeps failing, is one ``ProviderError`` (``ProviderStopError`` where
the key, the model or the quota is refused) saying what failed, translated in
``openai_errors``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from vectorize.errors import ConfigError, ProviderError, ProviderStopError
from vectorize.providers.openai_errors import api_failure
from vectorize.providers.remote import ClientSpec

logger = logging.getLogger(__name__)

CALL_ATTEMPTS = 5
FINISHED = ("completed", "expired", "cancelled", "failed")
LISTED_PER_PAGE = 100


class BatchGone(ProviderError):
    """The Batch API no longer has a batch or file of ours (deleted, expired, another project's)."""


@dataclass(frozen=True)
class BatchStatus:
    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def of(cls, batch: Any) -> BatchStatus:
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return cls(
            batch.id,
            batch.status,
            batch.output_file_id,
            batch.error_file_id,
            errors[0].code if errors else None,
            errors[0].message if errors else None,
        )


class BatchClient:
    """One endpoint's Batch API; ``url``: the path each request line names."""

    def __init__(self, client_spec: ClientSpec, model: str, url: str) -> None:
        self.spec = client_spec
        self.model = model
        self.url = url
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.spec.create()
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _call(self, what: str, call, made=None) -> Any:
        """``call()``'s result, retried on what may pass; raised as vectorize's errors (a 404 is
        ``BatchGone``: here it names a batch or a file, not the model). ``made()``, before each
        retry: what the failed attempt may have made after all (its answer lost), if it did."""
        for attempt in range(CALL_ATTEMPTS):
            try:
                return await call()
            except Exception as exc:
                failure = api_failure(exc, self.spec.where, self.model, self.spec.secret.scrub)
                if failure.status == 404:
                    raise BatchGone(f"the Batch API failed to {what}: {failure.message}") from None
                if failure.refusal:
                    raise ProviderStopError(failure.refusal) from None
                if failure.kind == "reject" or attempt + 1 == CALL_ATTEMPTS:
                    raise ProviderError(f"the Batch API failed to {what}: {failure.message}") from None
                logger.info("%s failed (%s); again", what, failure.message)
                await asyncio.sleep(failure.retry_after or min(30.0, 0.5 * 2**attempt))
                if made is not None and (found := await made()) is not None:
                    return found
        raise AssertionError("unreachable")

    async def check_available(self) -> None:
        """One line before any work where the server has no Batch API."""
        try:
            await self.client.files.list(purpose="batch", limit=1)
        except Exception as exc:
            failure = api_failure(exc, self.spec.where, self.model, self.spec.secret.scrub)
            if failure.status == 404:
                raise ConfigError(
                    f"{self.spec.where} has no Batch API (404 on /files): drop --batch-api to embed synchronously"
                ) from None
            if failure.refusal:
                raise ProviderStopError(failure.refusal) from None
            raise ConfigError(f"the Batch API at {self.spec.where} did not answer: {failure.message}") from None

    async def upload(self, content: bytes, name: str) -> str:
        result = await self._call("upload a request file", lambda: self.client.files.create(
            file=(name, bytes(content), "application/jsonl"), purpose="batch"))  # fmt: skip
        return result.id

    async def create(self, file_id: str, key: str, since: float, metadata: dict[str, str]) -> BatchStatus:
        """The batch of submission ``key`` from ``file_id``; an attempt whose answer was lost is
        looked for (``find``) before another is made: two batches of one file are paid twice."""

        async def made() -> Any:
            return await self._find(key, file_id, since)

        batch = await self._call("create a batch", lambda: self.client.batches.create(
            input_file_id=file_id, endpoint=self.url, completion_window="24h", metadata=metadata), made)  # fmt: skip
        return BatchStatus.of(batch)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        batch = await self._call(f"read batch {batch_id}", lambda: self.client.batches.retrieve(batch_id))
        return BatchStatus.of(batch)

    async def cancel(self, batch_id: str) -> BatchStatus:
        batch = await self._call(f"cancel batch {batch_id}", lambda: self.client.batches.cancel(batch_id))
        return BatchStatus.of(batch)

    async def find(self, key: str, file_id: str | None, since: float) -> BatchStatus | None:
        """The batch made for submission ``key`` (its metadata names it) or from ``file_id``, among
        those created since ``since`` (Unix time); None where there is none: it was never made."""
        found = await self._find(key, file_id, since)
        return None if found is None else BatchStatus.of(found)

    async def _find(self, key: str, file_id: str | None, since: float) -> Any:
        after = None
        while True:
            kwargs = {"limit": LISTED_PER_PAGE, **({"after": after} if after else {})}
            page = await self._call("list batches", lambda kwargs=kwargs: self.client.batches.list(**kwargs))
            batches = list(page.data or [])
            for batch in batches:
                if (batch.metadata or {}).get("vectorize_key") == key or (file_id and batch.input_file_id == file_id):
                    return batch
            if not batches or not page.has_more or batches[-1].created_at < since:
                return None
            after = batches[-1].id

    async def download(self, file_id: str) -> bytes:
        content = await self._call(f"read file {file_id}", lambda: self.client.files.content(file_id))
        return content.read() if hasattr(content, "read") else bytes(content)
