"""One Serve application for several models: a deployment each, embeddings by any of their
names, search with each collection's own model, and a migrated collection searched with its
new model without a restart."""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from jobs.migrate import migrate
from serve.launch import free_port
from tests.corpus import commit_rows, write_jsonl
from tests.helpers import run
from vectorize.models import DEFAULT_MODEL
from vectorize.settings import RunSettings
from vectorize.text import clean_text

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


@pytest.fixture(scope="module")
def two_models(ray_cluster, tiny_model, other_tiny_model, pg_dsn, tmp_path_factory):
    """Collections of the tiny model, of MiniLM and of a model not served; the application
    serving the first two."""
    from ray import serve

    from serve.app import compose

    folder = tmp_path_factory.mktemp("serve-models")
    rows = [{"id": r["id"], "text": r["text"][:200]} for r in commit_rows(24)]
    source = write_jsonl(folder / "c.jsonl", rows)
    run(source, "models_tiny", tiny_model, pg_dsn)
    run(source, "models_minilm", DEFAULT_MODEL, pg_dsn)
    run(source, "models_unserved", other_tiny_model, pg_dsn)
    port = free_port("127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # MiniLM's replica holds one call and its handle queues one more: a burst finds the bound
    bounded = {DEFAULT_MODEL: {"max_ongoing_requests": 1, "max_queued_requests": 1}}
    application = compose([tiny_model, DEFAULT_MODEL], dsn=pg_dsn, threads=1, actor_options={"num_cpus": 0.5},
                          model_options=bounded)  # fmt: skip
    serve.run(application, name="vectorize-models", route_prefix="/")
    yield f"http://127.0.0.1:{port}", rows, source
    serve.shutdown()


def embed(base: str, model: str | None, text: str = "a commit message") -> httpx.Response:
    body = {"input": text, **({"model": model} if model is not None else {})}
    return httpx.post(f"{base}/v1/embeddings", json=body, timeout=60)


def search(base: str, collection: str, text: str) -> httpx.Response:
    body = {"query": clean_text(text), "collection": collection, "k": 3}
    return httpx.post(f"{base}/v1/search", json=body, timeout=60)


def test_each_model_answers_by_any_of_its_names_and_an_unknown_one_is_404(two_models, tiny_model):
    base = two_models[0]
    listed = httpx.get(f"{base}/v1/models").json()["data"]
    assert [m["dimensions"] for m in listed] == [32, 384]
    for model in listed:
        for name in (model["id"], *model["aliases"]):
            answer = embed(base, name)
            assert answer.status_code == 200, (name, answer.text)
            assert len(answer.json()["data"][0]["embedding"]) == model["dimensions"]
            assert answer.json()["model"] == model["id"]
    assert len(embed(base, None).json()["data"][0]["embedding"]) == 32  # none named: the first served
    unknown = embed(base, "gpt-9")
    assert unknown.status_code == 404
    message = unknown.json()["error"]["message"]
    assert "gpt-9" in message and "all-MiniLM-L6-v2" in message


def _series(metrics: str, name: str) -> dict[str, float]:
    return {model: float(value) for model, value in re.findall(rf'^{name}{{model="([^"]+)"}} (\S+)$', metrics, re.M)}


def test_health_and_metrics_tell_of_each_models_deployment(two_models):
    base = two_models[0]
    ids = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
    health = httpx.get(f"{base}/healthz", timeout=30)
    assert health.status_code == 200
    assert health.json()["loaded"] == dict.fromkeys(ids, True) and health.json()["model_loaded"] is True
    before = _series(httpx.get(f"{base}/metrics").text, "vectorize_cache_hits_total")
    for _ in range(2):  # the second time from the model's cache
        assert embed(base, ids[1], "the same text twice").status_code == 200
    metrics = httpx.get(f"{base}/metrics").text
    assert set(_series(metrics, "vectorize_model_calls_total")) == set(ids)
    assert _series(metrics, "vectorize_cache_hits_total")[ids[1]] == before.get(ids[1], 0) + 1
    assert _series(metrics, "vectorize_texts_embedded_total")[ids[1]] >= 1


def test_a_burst_past_a_models_queue_is_503_with_retry_after_and_the_rest_is_answered(two_models):
    base = two_models[0]
    text = " ".join(["a long commit message about the pipeline and its writers"] * 20)
    with ThreadPoolExecutor(24) as pool:  # texts of their own: none is answered from the cache
        answers = list(pool.map(lambda i: embed(base, DEFAULT_MODEL, f"{i} {text}"), range(24)))
    codes = Counter(answer.status_code for answer in answers)
    assert set(codes) == {200, 503}, codes
    refused = next(answer for answer in answers if answer.status_code == 503)
    message = refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "1"
    assert message.startswith("the replicas of sentence-transformers/all-MiniLM-L6-v2 hold as many"), message
    assert all(len(a.json()["data"][0]["embedding"]) == 384 for a in answers if a.status_code == 200)
    assert embed(base, DEFAULT_MODEL).status_code == 200  # the burst over, the model answers again


def test_search_uses_each_collections_model_and_refuses_one_not_served(two_models):
    base, rows, _ = two_models
    target = rows[5]
    for collection in ("models_tiny", "models_minilm"):
        hits = search(base, collection, target["text"]).json()["data"]
        assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-3), collection
    minilm_hits = search(base, "models_minilm", target["text"]).json()["data"]
    assert minilm_hits[0]["id"] == target["id"]  # a real model tells this text from the others
    refused = search(base, "models_unserved", target["text"])
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "collection"
    assert "does not serve" in refused.json()["error"]["message"]


def test_a_migrated_collection_is_searched_with_its_new_model_without_a_restart(two_models, pg_dsn):
    base, rows, source = two_models
    target = rows[7]
    before = search(base, "models_tiny", target["text"])
    assert before.status_code == 200
    # beside the two replicas: an actor of half a core, the rest for reading and writing
    settings = RunSettings.of(
        source=str(source),
        table="models_tiny",
        model=DEFAULT_MODEL,
        dsn=pg_dsn,
        actors=(1, 1),
        cpus_per_actor=0.5,
        stall_timeout_s=120,
    )
    assert migrate(settings).swapped
    after = search(base, "models_tiny", target["text"])  # the cached model is the old one: asked again
    assert after.status_code == 200, after.text
    assert after.json()["data"][0]["id"] == target["id"]
    assert after.json()["data"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)


def test_serving_one_model_twice_is_refused_before_ray_starts(tiny_model):
    from tests.helpers import cli_error_lines

    lines = cli_error_lines("serve", "--model", tiny_model, "--model", tiny_model, "--port", str(free_port()))
    assert lines == ["vectorize: error: --model names the same model twice: give each model once"]
