"""``serve.app:app``: OpenAI-compatible embeddings and search over the collections, on Ray Serve.

Routes: ``POST /v1/embeddings``, ``POST /v1/search``, ``POST /v1/nearest``, ``GET /v1/models``,
``GET /healthz`` and ``GET /metrics``. The model is the batch job's provider, so a text gets
the vector the job stores for it.

Serve hands each HTTP request to ``__call__``, which looks its route up in ``ROUTES``. A
FastAPI ingress did the same routing for a third more CPU per request (0.76 ms against 0.50 ms
for a no-op on this machine), and a CPU replica spends that time with its model idle.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from serve.api_errors import ApiError
from serve.auth import authorized, configured_keys
from serve.collection_access import Collections, ModelChanged
from serve.logs import log_to_replica_file
from serve.metrics import ServiceMetrics
from serve.model_catalog import CatalogEntry, ModelCatalog
from serve.responses import FastJSONResponse
from serve.schema import EmbeddingsRequest, NearestRequest, SearchRequest, parse_json
from serve.served_model import ServedModel
from vectorize.models import DEFAULT_MODEL
from vectorize.providers.base import ProviderRequest, provider_spec

logger = logging.getLogger(__name__)

# max_pending_requests: requests a replica holds at once (answering or waiting for a batch);
# past it a 503 with Retry-After. Serve's max_queued_requests bounds those its HTTP server has
# read and not yet handed over; MAX_ONGOING is above the replica's own bound, so that the
# replica sees the requests it refuses.
DEFAULT_USER_CONFIG = {"max_batch_texts": 64, "batch_wait_s": 0.01, "cache_size": 10_000, "max_pending_requests": 320}
MAX_ONGOING = 384
OPEN_ROUTES = ("/healthz", "/metrics")
UNKNOWN_ROUTE = "unknown"
# (method, path) -> the EmbeddingService method that answers it
ROUTES = {
    ("POST", "/v1/embeddings"): "embeddings",
    ("POST", "/v1/search"): "search",
    ("POST", "/v1/nearest"): "nearest",
    ("GET", "/v1/models"): "models",
    ("GET", "/healthz"): "healthz",
    ("GET", "/metrics"): "metrics_text",
}


def route_of(request: Request) -> str:
    """The request's path below the application's route prefix."""
    path, prefix = request.scope["path"], request.scope.get("root_path", "")
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :]
    return path.rstrip("/") or "/"


def error_response(error: ApiError) -> JSONResponse:
    answer = JSONResponse(error.body(), status_code=error.status)
    if error.retry_after_s is not None:
        answer.headers["Retry-After"] = str(error.retry_after_s)
    return answer


@serve.deployment(
    max_ongoing_requests=MAX_ONGOING,
    max_queued_requests=256,
    backpressure_config={"status_code": 503, "retry_after_s": 1},
    user_config=DEFAULT_USER_CONFIG,
    ray_actor_options={"num_cpus": 1},
)
class EmbeddingService:
    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        dsn: str | None = None,
        matryoshka: bool = False,
        max_body_bytes: int = 4 * 1024 * 1024,
        threads: int | None = None,
        api_keys: list[str] | None = None,
        models: dict[str, Any] | None = None,
    ) -> None:
        """``models``: several models, each a ModelServer deployment (model -> its handle); else
        ``model`` is served in this replica."""
        log_to_replica_file()
        self.model: ServedModel | None = None
        self.metrics = ServiceMetrics()
        if models:
            entries = [CatalogEntry.of(provider_spec(ProviderRequest("local", given)).identity, given, handle)
                       for given, handle in models.items()]  # fmt: skip
        else:
            self.model = ServedModel.for_replica(model, threads=threads, matryoshka=matryoshka,
                                                 cache_size=DEFAULT_USER_CONFIG["cache_size"])  # fmt: skip
            entries = [CatalogEntry.of(self.model.identity, model, self.model)]
        self.catalog = ModelCatalog(entries, deployed=bool(models))
        self.collections = Collections(dsn)
        self.max_body_bytes = max_body_bytes
        self.keys = [k.encode() for k in api_keys] if api_keys is not None else configured_keys()
        self.pending = 0
        self.max_pending = DEFAULT_USER_CONFIG["max_pending_requests"]

    async def __call__(self, request: Request) -> Response:
        route = route_of(request)
        if self.pending >= self.max_pending and route not in OPEN_ROUTES:
            self._count(route if any(path == route for _, path in ROUTES) else UNKNOWN_ROUTE, 503)
            message = f"this replica holds {self.max_pending} requests already; retry"
            return error_response(ApiError(503, message, "server_error", retry_after_s=1))
        self.pending += 1
        try:
            return await self._route(request)
        finally:
            self.pending -= 1

    async def _route(self, request: Request) -> Response:
        route = route_of(request)
        name = ROUTES.get((request.method, route))
        if name is None:
            methods = sorted(method for method, path in ROUTES if path == route)
            if methods:
                error = ApiError(405, f"{route} takes {' or '.join(methods)}, not {request.method}")
            else:
                error = ApiError(404, f"no route {route}; the routes are {', '.join(sorted({p for _, p in ROUTES}))}")
            self._count(route if methods else UNKNOWN_ROUTE, error.status)  # any path: one label, not one each
            answer = error_response(error)
            if methods:
                answer.headers["Allow"] = ", ".join(methods)
            return answer
        try:
            return await getattr(self, name)(request)
        except Exception:
            logger.exception("%s %s failed", request.method, route)
            self._count(route, 500)
            return error_response(ApiError(500, "the server failed to answer; its log says why", "server_error"))

    def reconfigure(self, config: dict) -> None:
        merged = {**DEFAULT_USER_CONFIG, **(config or {})}
        self.max_pending = max(1, int(merged["max_pending_requests"]))
        if self.model is not None:  # several models: each deployment takes its own user_config
            self.model.configure(int(merged["max_batch_texts"]), float(merged["batch_wait_s"]),
                                 int(merged["cache_size"]))  # fmt: skip

    async def _guard(self, request: Request, route: str) -> None:
        if route not in OPEN_ROUTES and not authorized(request.headers.get("authorization"), self.keys):
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer <key>", "authentication_error")

    def _count(self, route: str, status: int) -> None:
        self.metrics.requests[(route, status)] += 1

    async def _body(self, request: Request, route: str) -> dict:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            raise ApiError(413, f"the request body is {length} bytes; the limit is {self.max_body_bytes}")
        return parse_json(await request.body(), self.max_body_bytes)

    async def _answer(self, request: Request, route: str, handler: Callable[[], Awaitable[dict]]) -> Response:
        try:
            await self._guard(request, route)
            payload = await handler()
        except ApiError as exc:
            self._count(route, exc.status)
            return error_response(exc)
        self._count(route, 200)
        return FastJSONResponse(payload)

    async def embeddings(self, request: Request) -> Response:
        async def handle() -> dict:
            parsed = EmbeddingsRequest.parse(await self._body(request, "/v1/embeddings"))
            entry = self.catalog.find(parsed.model)
            vectors, tokens = await self.catalog.embed(entry, parsed.texts, parsed.dimensions)
            data = []
            for i, vector in enumerate(vectors):
                if parsed.encoding_format == "base64":
                    value = base64.b64encode(vector.astype("<f4").tobytes()).decode()
                else:
                    value = vector
                data.append({"object": "embedding", "index": i, "embedding": value})
            return {
                "object": "list",
                "data": data,
                "model": entry.identity.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }

        return await self._answer(request, "/v1/embeddings", handle)

    async def search(self, request: Request) -> Response:
        async def handle() -> dict:
            parsed = SearchRequest.parse(await self._body(request, "/v1/search"))
            hits = await self._search(parsed)
            return {"object": "list", "collection": parsed.collection, "data": hits}

        return await self._answer(request, "/v1/search", handle)

    async def _search(self, parsed: SearchRequest) -> list[dict]:
        """The query embedded with the collection's own model; once more with the new one where
        a migration swapped it in between."""
        for _attempt in range(2):
            identity = await asyncio.to_thread(self.collections.model_of, parsed.collection)
            entry = self.catalog.serving(identity)
            if entry is None:
                raise ApiError(
                    400, f"collection {parsed.collection!r} holds vectors of {identity.name}, which this server does "
                    f"not serve (it serves {self.catalog.names()}): serve that model too (--model)",
                    param="collection", code="model_not_served",
                )  # fmt: skip
            vectors, _ = await self.catalog.embed(entry, [parsed.query])
            try:
                return await asyncio.to_thread(self.collections.search, parsed, vectors[0], entry.identity)
            except ModelChanged:
                continue
        raise ApiError(503, "the collection's model changed twice during this search; retry", "server_error",
                       retry_after_s=1)  # fmt: skip

    async def nearest(self, request: Request) -> Response:
        """The stored texts nearest to given vectors, and a summary over their nearest hits."""

        async def handle() -> dict:
            parsed = NearestRequest.parse(await self._body(request, "/v1/nearest"))
            found = await asyncio.to_thread(self.collections.nearest_to_vectors, parsed)
            results = [{"index": i, "hits": [h.to_dict() for h in hits]} for i, hits in enumerate(found.hits)]
            return {"object": "list", "collection": parsed.collection, "data": results, "summary": found.summary()}

        return await self._answer(request, "/v1/nearest", handle)

    async def models(self, request: Request) -> Response:
        async def handle() -> dict:
            return {"object": "list", "data": [entry.describe() for entry in self.catalog.entries]}

        return await self._answer(request, "/v1/models", handle)

    async def healthz(self, _request: Request) -> JSONResponse:
        """200 when the database answers (or none is set) and every model does; else 503."""
        database, figures = await asyncio.gather(asyncio.to_thread(self.collections.reachable), self.catalog.figures())
        names = [entry.identity.name for entry in self.catalog.entries]
        loaded = {name: found is not None for name, found in zip(names, figures, strict=True)}
        healthy = database is not False and all(loaded.values())
        body = {"model": names[0], "models": names, "model_loaded": all(loaded.values()), "loaded": loaded,
                "database": database}  # fmt: skip
        self._count("/healthz", 200 if healthy else 503)
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics_text(self, _request: Request) -> PlainTextResponse:
        figures = [found for found in await self.catalog.figures() if found is not None]
        return PlainTextResponse(self.metrics.render(figures), media_type="text/plain; version=0.0.4")


def compose(
    models: list[str],
    *,
    dsn: str | None,
    matryoshka: bool = False,
    threads: int | None = None,
    replicas: int | None = None,
    actor_options: dict | None = None,
    model_options: dict[str, dict] | None = None,
) -> serve.Application:
    """The application serving ``models``: one model in the ingress's own replicas; several, each
    in a ``ModelServer`` deployment of its own (``replicas`` and ``actor_options`` each, and a
    model's own deployment options in ``model_options``), behind an ingress that takes no CPU of
    its own reservation."""
    from serve.model_server import ModelServer, deployment_names

    per_model = {k: v for k, v in (("num_replicas", replicas), ("ray_actor_options", actor_options)) if v}
    own = model_options or {}
    if len(models) == 1:
        return EmbeddingService.options(**{**per_model, **own.get(models[0], {})}).bind(
            model=models[0], dsn=dsn, matryoshka=matryoshka, threads=threads
        )
    servers = {
        model: ModelServer.options(name=name, **{**per_model, **own.get(model, {})}).bind(
            model=model, matryoshka=matryoshka, threads=threads
        )
        for model, name in zip(models, deployment_names(models), strict=True)
    }
    runtime_env = (actor_options or {}).get("runtime_env")
    ingress = {"num_cpus": 0, **({"runtime_env": runtime_env} if runtime_env else {})}
    return EmbeddingService.options(ray_actor_options=ingress).bind(model=models[0], dsn=dsn, models=servers)


def build_app(args: dict | None = None) -> serve.Application:
    """The application with settings from ``args`` (a Serve config's ``args``: ``model``, or
    ``models`` for several) or the environment."""
    args = args or {}
    models = list(args.get("models") or [args.get("model") or os.environ.get("VECTORIZE_MODEL") or DEFAULT_MODEL])
    return compose(
        models, dsn=args.get("dsn") or os.environ.get("VECTORIZE_DSN"), matryoshka=bool(args.get("matryoshka", False))
    )


app = build_app()
