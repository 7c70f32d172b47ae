"""A provider defined here, added through its registration alone: a job and a search run with it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest

from tests.corpus import commit_rows, write_jsonl
from tests.helpers import stored
from vectorize.cli import main
from vectorize.identity import ModelIdentity
from vectorize.providers import base
from vectorize.providers.base import ActorPlan, ActorRequest, EmbeddedBatch, ProviderRequest, register_provider
from vectorize.tokens import EstimatedCounter

pytestmark = pytest.mark.usefixtures("ray_cluster")
DIMENSIONS = 16


def hash_vector(text: str) -> np.ndarray:
    """A deterministic unit vector for a text: no model at all."""
    raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIMENSIONS], dtype=np.uint8).astype(np.float32)
    centred = raw - 127.5
    return centred / np.linalg.norm(centred)


@pytest.fixture
def hash_provider():
    class HashProvider:
        def __init__(self, identity: ModelIdentity) -> None:
            self.identity = identity

        async def embed(self, texts):
            vectors = np.stack([hash_vector(t) for t in texts])
            return EmbeddedBatch(vectors, [len(t.split()) for t in texts], [False] * len(texts))

        async def close(self) -> None:
            return None

    @dataclass(frozen=True)
    class HashSpec:
        identity: ModelIdentity
        origin: str = "hash:sha256"
        default_batch_rows: int = 8
        special_tokens: int = 0
        service: str | None = None

        def token_spans(self) -> EstimatedCounter:
            return EstimatedCounter(chars_per_token=4)

        def prefix_tokens(self) -> int:
            return 0

        def plan_actors(self, cluster: dict[str, float], asked: ActorRequest) -> ActorPlan:
            return ActorPlan(1, 1, 0.25, 0.0, None)

        def start_budgets(self, actor_options: dict) -> None:
            return None

        def open(self, threads: int | None = None, budgets: object = None) -> HashProvider:
            return HashProvider(self.identity)

    def hash_spec(request: ProviderRequest) -> HashSpec:
        return HashSpec(ModelIdentity(f"hash-{request.model}", "sha256", DIMENSIONS, True, "", 512))

    register_provider("hash", hash_spec)
    yield "hash"
    base._FACTORIES.pop("hash")


def test_a_provider_added_by_registration_runs_a_job_and_a_search(hash_provider, tmp_path, pg_dsn, table_name, capsys):
    rows = commit_rows(30)
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    common = ["--table", table_name, "--provider", hash_provider, "--model", "words", "--dsn", pg_dsn, "--json"]
    assert main(["run", str(source), *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == len(rows) and summary["failed"] == 0
    vectors = stored(pg_dsn, table_name)
    assert len(vectors) == len(rows)
    for text, vector in vectors.values():
        np.testing.assert_allclose(vector, hash_vector(text), atol=1e-6)

    wanted = rows[7]["text"].strip()
    assert main(["search", wanted, *common, "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == str(rows[7]["id"]) and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
