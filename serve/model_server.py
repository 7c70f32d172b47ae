"""One model of an application that serves several: a deployment of its own (its replicas,
resources and autoscaling), called by the ingress through its handle. Its batching and cache
are the single-model application's (``serve.served_model``)."""

from __future__ import annotations

from ray import serve

from serve.api_errors import ApiError
from serve.metrics import ModelFigures
from serve.model_catalog import error_fields
from serve.served_model import ServedModel

MODEL_USER_CONFIG = {"max_batch_texts": 64, "batch_wait_s": 0.01, "cache_size": 10_000}
# Calls the ingress may queue for the model's replicas beyond those they hold: past it the
# handle refuses at once and the ingress answers 503 with Retry-After, as for its own bound.
MAX_QUEUED_CALLS = 256


@serve.deployment(
    max_ongoing_requests=384,
    max_queued_requests=MAX_QUEUED_CALLS,
    user_config=MODEL_USER_CONFIG,
    ray_actor_options={"num_cpus": 1},
)
class ModelServer:
    def __init__(self, model: str, matryoshka: bool = False, threads: int | None = None) -> None:
        from serve.logs import log_to_replica_file

        log_to_replica_file()
        self.model = ServedModel.for_replica(model, threads=threads, matryoshka=matryoshka,
                                             cache_size=MODEL_USER_CONFIG["cache_size"])  # fmt: skip

    def reconfigure(self, config: dict) -> None:
        merged = {**MODEL_USER_CONFIG, **(config or {})}
        self.model.configure(int(merged["max_batch_texts"]), float(merged["batch_wait_s"]), int(merged["cache_size"]))

    async def embed(self, texts: list[str], dimensions: int | None) -> tuple:
        """(vectors, tokens, None), or (None, 0, the error's fields) for the ingress to answer."""
        try:
            vectors, tokens = await self.model.embed(texts, dimensions)
        except ApiError as exc:
            return None, 0, error_fields(exc)
        return vectors, tokens, None

    async def figures(self) -> ModelFigures:
        """This replica's model calls and cache."""
        return self.model.figures()


def deployment_names(models: list[str]) -> list[str]:
    """A deployment name for each model, by its short name (Serve's config file refers to them
    by these), numbered where two share one."""
    shorts = ["".join(c if c.isalnum() or c in "-_." else "-" for c in m.rstrip("/").rsplit("/", 1)[-1])[:60]
              for m in models]  # fmt: skip
    return [f"Model-{short}" if shorts.count(short) == 1 else f"Model-{short}-{i}" for i, short in enumerate(shorts)]
