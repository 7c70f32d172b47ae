"""The models an application serves, by every name a client may call them: a model in the
ingress replica itself (one model: no hop between deployments), or one deployment per model
(``serve.model_server``), each with its own replicas, reached through its handle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from serve.api_errors import ApiError
from serve.metrics import ModelFigures
from vectorize.identity import ModelIdentity

logger = logging.getLogger(__name__)

FIGURES_TIMEOUT_S = 2.0  # a model deployment that does not answer in this time counts as not loaded


@dataclass(frozen=True)
class CatalogEntry:
    identity: ModelIdentity
    names: tuple[str, ...]  # its id, its short name ("all-MiniLM-L6-v2"), what serve was given
    embedder: Any  # serve.served_model.ServedModel here, or a DeploymentHandle of a ModelServer

    @classmethod
    def of(cls, identity: ModelIdentity, given: str, embedder: Any) -> CatalogEntry:
        names = tuple(dict.fromkeys((identity.name, identity.name.rsplit("/", 1)[-1], given)))
        return cls(identity, names, embedder)

    def describe(self) -> dict:
        aliases = [name for name in self.names if name != self.identity.name]
        return {"id": self.identity.name, "object": "model", "owned_by": "vectorize",
                "dimensions": self.identity.dimensions, "aliases": aliases}  # fmt: skip


def error_fields(error: ApiError) -> dict:
    """An ApiError as plain fields, to cross from a model deployment to the ingress."""
    return asdict(error)


class ModelCatalog:
    def __init__(self, entries: Sequence[CatalogEntry], deployed: bool) -> None:
        self.entries = list(entries)
        self.deployed = deployed  # the models run in deployments of their own, not in this replica

    @property
    def default(self) -> CatalogEntry:
        return self.entries[0]

    def names(self) -> str:
        return ", ".join(entry.identity.name for entry in self.entries)

    def find(self, name: str | None) -> CatalogEntry:
        """The model a request names (none: the first one served); unknown: a 404 naming those served."""
        if name in (None, ""):
            return self.default
        for entry in self.entries:
            if name in entry.names:
                return entry
        raise ApiError(
            404, f"the model {name!r} is not served here (it serves {self.names()}); GET /v1/models lists them",
            param="model", code="model_not_found",
        )  # fmt: skip

    def serving(self, identity: ModelIdentity) -> CatalogEntry | None:
        return next((entry for entry in self.entries if entry.identity.same_model(identity)), None)

    async def embed(
        self, entry: CatalogEntry, texts: Sequence[str], dimensions: int | None = None
    ) -> tuple[np.ndarray, int]:
        if not self.deployed:
            return await entry.embedder.embed(texts, dimensions)
        from ray.serve.exceptions import BackPressureError

        try:
            vectors, tokens, error = await entry.embedder.embed.remote(list(texts), dimensions)
        except BackPressureError:
            raise ApiError(
                503, f"the replicas of {entry.identity.name} hold as many requests as they queue; retry",
                "server_error", retry_after_s=1,
            ) from None  # fmt: skip
        if error is not None:
            raise ApiError(**error)
        return vectors, tokens

    async def figures(self) -> list[ModelFigures | None]:
        """Each model's calls and cache, in the order served (of one replica of its deployment);
        None for a model whose deployment did not answer."""
        if not self.deployed:
            return [entry.embedder.figures() for entry in self.entries]
        return list(await asyncio.gather(*(self._asked(entry) for entry in self.entries)))

    async def _asked(self, entry: CatalogEntry) -> ModelFigures | None:
        try:
            return await asyncio.wait_for(entry.embedder.figures.remote(), FIGURES_TIMEOUT_S)
        except Exception as exc:  # unreachable, or not started yet: health says so
            logger.warning("the deployment of %s did not answer: %s", entry.identity.name, type(exc).__name__)
            return None
