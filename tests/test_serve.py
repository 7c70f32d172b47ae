"""The Serve application on 127.0.0.1: the real openai SDK and httpx against it, the tiny model,
the session's Ray and Postgres."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from serve.app import DEFAULT_USER_CONFIG
from serve.launch import free_port
from tests.corpus import commit_rows, write_jsonl
from tests.helpers import cosine, run, stored
from vectorize.text import clean_text

API_KEY = "sk-serve-test"
pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def served(ray_cluster, tiny_model, pg_dsn, tmp_path_factory):
    """A collection the job embedded with the tiny model, and the application serving that model."""
    from ray import serve

    from serve.app import EmbeddingService

    rows = commit_rows(40)
    for i, row in enumerate(rows):
        row["team"] = "core" if i % 2 else "docs"
    source = write_jsonl(tmp_path_factory.mktemp("serve") / "c.jsonl", rows)
    run(source, "served_commits", tiny_model, pg_dsn, text="{text}")
    port = free_port("127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    application = EmbeddingService.options(ray_actor_options={"num_cpus": 0.5}).bind(
        model=tiny_model, dsn=pg_dsn, matryoshka=True, max_body_bytes=200_000, threads=1, api_keys=[API_KEY]
    )
    serve.run(application, name="vectorize", route_prefix="/")
    yield f"http://127.0.0.1:{port}", rows, stored(pg_dsn, "served_commits")
    serve.shutdown()


def client(base: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0)


def test_the_sdk_gets_the_vectors_the_job_stored(served):
    base, _, stored_rows = served
    texts = [text for text, _ in list(stored_rows.values())[:5]]
    sdk = client(base)
    single = sdk.embeddings.create(input=texts[0], model=sdk_model(base))
    assert len(single.data) == 1 and single.usage.prompt_tokens > 0
    many = sdk.embeddings.create(input=texts, model=sdk_model(base))
    expected = {text: vector for text, vector in stored_rows.values()}
    assert cosine(np.asarray(single.data[0].embedding), expected[texts[0]]) >= 0.9999
    for item, text in zip(many.data, texts, strict=True):
        assert cosine(np.asarray(item.embedding), expected[text]) >= 0.9999


def sdk_model(base: str) -> str:
    return httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"][0]["id"]


def test_base64_and_dimensions(served):
    base, _, stored_rows = served
    text = next(iter(stored_rows.values()))[0]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    floats = httpx.post(f"{base}/v1/embeddings", json={"input": text}, headers=headers).json()
    packed = httpx.post(f"{base}/v1/embeddings", json={"input": text, "encoding_format": "base64"}, headers=headers)
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.asarray(floats["data"][0]["embedding"], dtype=np.float32))
    short = client(base).embeddings.create(input=text, model=sdk_model(base), dimensions=16).data[0].embedding
    full = np.asarray(floats["data"][0]["embedding"])
    assert len(short) == 16 and np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    assert cosine(np.asarray(short), full[:16]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"input": 42}).encode(), 400, "'input' must be a string or a list of strings"),
        (json.dumps({"input": ["a"] * 2049}).encode(), 400, "the limit is 2048"),
        (json.dumps({"input": ["fine", ""]}).encode(), 400, "'input[1]' is empty"),
        (json.dumps({"input": "x", "dimensions": "8"}).encode(), 400, "'dimensions' must be a positive integer"),
        (json.dumps({"input": "x", "dimensions": 64}).encode(), 400, "at most 32"),
        (json.dumps({"input": "x", "model": "gpt-9"}).encode(), 404, "not served here"),
        (json.dumps({"input": "x" * 250_000}).encode(), 413, "the limit is 200000"),
        (b'{"input": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "nested too deep"),
        (b'{"input": "half \\ud800 a pair"}', 400, "'input[0]' holds a lone surrogate"),
        (json.dumps({"input": [[1, 2, 3], [4]]}).encode(), 400, "check_embedding_ctx_length=False"),
        (json.dumps({"input": [15339, 1917]}).encode(), 400, "holds token ids"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(served, body, status, says):
    base = served[0]
    answer = httpx.post(
        f"{base}/v1/embeddings",
        content=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and says in error["message"]


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic " + API_KEY])
def test_a_missing_or_wrong_key_is_401(served, header):
    base = served[0]
    headers = {"Authorization": header} if header else {}
    answer = httpx.post(f"{base}/v1/embeddings", json={"input": "x"}, headers=headers)
    assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"


def test_unknown_routes_and_methods_get_openai_shaped_errors(served):
    base = served[0]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    unknown = httpx.post(f"{base}/v1/completions", json={"prompt": "x"}, headers=headers)
    assert unknown.status_code == 404 and "no route /v1/completions" in unknown.json()["error"]["message"]
    wrong_method = httpx.get(f"{base}/v1/embeddings", headers=headers)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["message"] == "/v1/embeddings takes POST, not GET"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'vectorize_requests_total{route="unknown",status="404"}' in metrics
    assert "/v1/completions" not in metrics  # a scanner's paths do not each become a label


def test_forty_concurrent_requests_are_answered_in_fewer_model_calls(served):
    base, rows, _ = served
    headers = {"Authorization": f"Bearer {API_KEY}"}
    texts = [f"concurrent request {i}: {clean_text(rows[i % len(rows)]['text'])[:80]}" for i in range(40)]

    def model_calls() -> int:
        text = httpx.get(f"{base}/metrics").text
        return int(re.search(r'^vectorize_model_calls_total\{model="[^"]+"\} (\d+)$', text, re.M).group(1))

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as http:
            answers = await asyncio.gather(
                *(http.post(f"{base}/v1/embeddings", json={"input": t}, headers=headers) for t in texts)
            )
        return [a.json() for a in answers]

    before = model_calls()
    answers = asyncio.run(fire())
    calls = model_calls() - before
    assert all(len(a["data"]) == 1 for a in answers)
    singles = [httpx.post(f"{base}/v1/embeddings", json={"input": t}, headers=headers).json() for t in texts[:3]]
    for batched, single in zip(answers[:3], singles, strict=True):  # cached now, and equal
        np.testing.assert_allclose(batched["data"][0]["embedding"], single["data"][0]["embedding"], atol=1e-6)
    assert 1 <= calls < 40


def test_poisoned_requests_among_innocent_ones_fail_alone(served):
    base, rows, _ = served
    headers = {"Authorization": f"Bearer {API_KEY}"}
    innocent = [{"input": f"innocent {i}: {clean_text(rows[i % len(rows)]['text'])[:60]}"} for i in range(45)]
    poison = [
        b'{"input": ["fine", "bad \\udfff"]}',
        b'{"query": "q \\ud800", "collection": "served_commits"}',
        b'{"query": "q", "collection": "served_commits", "filter": {"team": "a\\u0000b"}}',
        b'{"query": "q", "collection": "served_commits", "filter": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}",
        b'{"input": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    ]

    async def fire() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=60) as http:
            good = [http.post(f"{base}/v1/embeddings", json=body, headers=headers) for body in innocent]
            bad = [
                http.post(f"{base}/v1/{'search' if b'query' in body else 'embeddings'}", content=body, headers=headers)
                for body in poison
            ]
            answers = await asyncio.gather(*good[:15], *bad[:2], *good[15:30], *bad[2:], *good[30:])
        return [*answers[:15], *answers[17:32], *answers[35:]], [*answers[15:17], *answers[32:35]]

    good, bad = asyncio.run(fire())
    assert [a.status_code for a in good] == [200] * len(innocent)
    assert [a.status_code for a in bad] == [400] * len(poison), [a.text[:200] for a in bad]
    assert all(set(a.json()["error"]) == {"message", "type", "param", "code"} for a in bad)


def test_the_models_short_name_is_accepted(served, tiny_model):
    base = served[0]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    listed = httpx.get(f"{base}/v1/models", headers=headers).json()["data"][0]
    assert tiny_model in listed["aliases"]
    for name in (listed["id"], *listed["aliases"]):
        answer = httpx.post(f"{base}/v1/embeddings", json={"input": "x", "model": name}, headers=headers)
        assert answer.status_code == 200, (name, answer.text)


def test_search_with_filter_and_unknown_collection(served):
    base, rows, _ = served
    headers = {"Authorization": f"Bearer {API_KEY}"}
    target = rows[3]
    query = {"query": clean_text(target["text"]), "collection": "served_commits", "k": 3}
    hits = httpx.post(f"{base}/v1/search", json=query, headers=headers).json()["data"]
    assert hits[0]["id"] == target["id"] and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    only_docs = httpx.post(f"{base}/v1/search", json={**query, "filter": {"team": "docs"}}, headers=headers)
    assert {h["metadata"]["team"] for h in only_docs.json()["data"]} == {"docs"}
    missing = httpx.post(f"{base}/v1/search", json={**query, "collection": "no_such_thing"}, headers=headers)
    assert missing.status_code == 404 and "no collection named" in missing.json()["error"]["message"]
    by_words = httpx.post(f"{base}/v1/search", json={**query, "mode": "hybrid"}, headers=headers).json()["data"]
    assert by_words[0]["id"] == target["id"] and by_words[0]["score"] > 0
    odd = httpx.post(f"{base}/v1/search", json={**query, "mode": "fuzzy"}, headers=headers)
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "mode"


def test_models_health_and_metrics(served):
    base = served[0]
    httpx.post(f"{base}/v1/embeddings", json={"input": "counted"}, headers={"Authorization": f"Bearer {API_KEY}"})
    models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert models["data"][0]["dimensions"] == 32
    health = httpx.get(f"{base}/healthz").json()
    assert health["model_loaded"] is True and health["database"] is True
    metrics = httpx.get(f"{base}/metrics").text
    assert "vectorize_cache_hits_total" in metrics and 'route="/v1/embeddings",status="200"' in metrics


def test_the_config_file_is_a_valid_serve_config():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    text = (Path(__file__).parent.parent / "serve" / "config.yaml").read_text()
    config = ServeDeploySchema.parse_obj(yaml.safe_load(text))
    (application,) = config.applications
    assert application.import_path == "serve.app:build_app"
    (deployment,) = application.deployments
    assert deployment.max_queued_requests > 0 and deployment.autoscaling_config["max_replicas"] >= 1


@pytest.mark.parametrize(
    ("name", "options", "texts", "requests"),
    [
        # Serve's own queue, behind its Python proxy
        ("tight", {"max_ongoing_requests": 1, "max_queued_requests": 1}, 2048, 12),
        # the replica's own bound, which holds whatever proxy hands it requests (HAProxy too)
        ("bounded", {"user_config": {**DEFAULT_USER_CONFIG, "max_pending_requests": 2}}, 512, 10),
    ],
)
def test_a_burst_past_the_bound_is_503_with_retry_after(served, tiny_model, name, options, texts, requests):
    from ray import serve

    from serve.app import EmbeddingService

    base = served[0]
    application = EmbeddingService.options(name=name, ray_actor_options={"num_cpus": 0.25}, **options).bind(
        model=tiny_model, threads=1, api_keys=[]
    )
    serve.run(application, name=name, route_prefix=f"/{name}")
    try:
        body = {"input": [f"burst text number {i} " * 20 for i in range(texts)]}

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as http:
                return await asyncio.gather(
                    *(http.post(f"{base}/{name}/v1/embeddings", json=body) for _ in range(requests))
                )

        answers = asyncio.run(fire())
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) == {200, 503}, statuses
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers.get("retry-after") == "1"
        assert httpx.get(f"{base}/{name}/healthz").status_code == 200
    finally:
        serve.delete(name)


def replica_log(application: str) -> str:
    """What the replicas of ``application`` wrote to their Serve log files."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    return "".join(path.read_text(errors="replace") for path in logs.glob(f"replica_{application}_*.log"))


def test_a_lost_database_is_a_503_and_one_line_in_the_replica_log(served, tiny_model, own_postgres, tmp_path):
    from ray import serve

    from serve.app import EmbeddingService
    from tests.own_postgres import kill_server

    base, name = served[0], "lostdb"
    quiet = {"num_cpus": 0.25, "runtime_env": {"env_vars": {"VECTORIZE_DEBUG": "0"}}}  # one line, no traceback
    application = EmbeddingService.options(name=name, ray_actor_options=quiet).bind(
        model=tiny_model, dsn=own_postgres.get_uri(), threads=1, api_keys=[]
    )
    serve.run(application, name=name, route_prefix=f"/{name}")
    try:
        search = {"query": "a commit", "collection": "nothing_here"}
        assert httpx.post(f"{base}/{name}/v1/search", json=search, timeout=60).status_code == 404
        kill_server(tmp_path / "pgdata")
        for _ in range(2):  # the connection it had, then a new one refused
            answer = httpx.post(f"{base}/{name}/v1/search", json=search, timeout=60)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["message"] == "the database does not answer; retry later"
            assert answer.headers.get("retry-after") == "5"
        health = httpx.get(f"{base}/{name}/healthz", timeout=60)
        assert health.status_code == 503 and health.json()["database"] is False
        assert httpx.post(f"{base}/{name}/v1/embeddings", json={"input": "still embedded"}).status_code == 200
        log = replica_log(name)
        said = [line for line in log.splitlines() if "does not answer" in line]
        assert len(said) >= 3, log[-3000:]
        # the cause's type and first line on the line (a server shut down says AdminShutdown: ...)
        assert all(re.search(r"does not answer: [A-Z]\w+: \S", line) for line in said), said
        assert "Traceback" not in log and "psycopg" not in log.replace("psycopg.", ""), log[-3000:]
    finally:
        serve.delete(name)


def test_nearest_texts_for_given_vectors_and_its_bad_input(served, pg_dsn, tiny_model):
    from tests.planted import plant_collection
    from vectorize.models import read_identity
    from vectorize.store.collection import Collection
    from vectorize.store.registry import prepare_collection

    base = served[0]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    plant_collection(pg_dsn, "served_planted", read_identity(tiny_model))  # vectors far apart, unlike the tiny model's
    planted = stored(pg_dsn, "served_planted")
    ids = ["r0", "r5", "r9"]
    vectors = [planted[i][1].tolist() for i in ids]
    answer = httpx.post(f"{base}/v1/nearest", json={"collection": "served_planted", "vectors": vectors, "k": 2},
                        headers=headers)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["hits"][0]["id"] for r in body["data"]] == ids
    assert all(len(r["hits"]) == 2 for r in body["data"])
    assert body["summary"]["count"] == 3 and body["summary"]["min"] == pytest.approx(1.0, abs=1e-5)
    one = httpx.post(
        f"{base}/v1/nearest", json={"collection": "served_planted", "vectors": vectors[0]}, headers=headers
    )
    assert one.json()["data"][0]["hits"][0]["id"] == ids[0] and len(one.json()["data"][0]["hits"]) == 10

    prepare_collection(pg_dsn, Collection("served_empty"), read_identity(tiny_model), "tests")
    nan_body = json.dumps({"collection": "served_planted", "vectors": [vectors[0], vectors[1]]})
    nan_body = nan_body.replace(str(vectors[1][5]), "NaN", 1)
    for body, status, param, says in (
        ({"collection": "served_planted", "vectors": [vectors[0][:31]]}, 400, "vectors", "31 dimensions"),
        (nan_body, 400, "vectors", "vector 1 holds NaN"),
        ({"collection": "no_such_thing", "vectors": vectors}, 404, "collection", "no collection 'no_such_thing'"),
        ({"collection": "served_empty", "vectors": vectors}, 400, "collection", "holds no vectors yet"),
        ({"collection": "served_planted", "vectors": []}, 400, "vectors", "non-empty list"),
        ({"collection": "served_planted", "vectors": [[1, "x"]]}, 400, "vectors", "give numbers"),
    ):
        content = body if isinstance(body, str) else json.dumps(body)
        answer = httpx.post(
            f"{base}/v1/nearest", content=content, headers={**headers, "content-type": "application/json"}
        )
        error = answer.json()["error"]
        assert (answer.status_code, error["param"]) == (status, param), answer.text
        assert says in error["message"]
