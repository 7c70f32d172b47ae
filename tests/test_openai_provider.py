"""The remote provider with the real openai SDK against the test server, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from tests.openai_server import vector_for
from vectorize.errors import ConfigError, ProviderStopError
from vectorize.providers.base import EmbeddedBatch, ProviderRequest, embed_blocking, provider_spec
from vectorize.remote_settings import RemoteSettings
from vectorize.secret import Secret
from vectorize.tokens import TiktokenCounter

TEXTS = [f"commit {i}: fix the index build when {'the table is large ' * (i % 5 + 1)}" for i in range(40)]


class Opened:
    """The remote provider as ``vectorize search`` opens it, called from code that is not async."""

    def __init__(self, settings: RemoteSettings) -> None:
        spec = provider_spec(ProviderRequest(settings.provider, settings.model, settings))
        self.identity = spec.identity
        self.provider = spec.open()

    def embed(self, texts: list[str]) -> EmbeddedBatch:
        return embed_blocking(self.provider, texts)


def settings(server, **kwargs) -> RemoteSettings:
    kwargs.setdefault("api_key", Secret(server.state.api_key))
    kwargs.setdefault("max_attempts", 4)
    kwargs.setdefault("timeout_s", 1.0)
    return RemoteSettings(base_url=server.base_url, **kwargs)


def test_vectors_come_back_in_input_order_from_a_shuffled_answer(openai_server):
    provider = Opened(settings(openai_server))
    assert provider.identity.dimensions == 1536 and provider.identity.revision == "api:text-embedding-3-small"
    result = provider.embed(TEXTS)
    assert result.problems == [None] * len(TEXTS)
    for text, vector in zip(TEXTS, result.vectors, strict=True):
        np.testing.assert_allclose(vector, vector_for(text, 1536), atol=1e-6)
    assert result.token_counts == TiktokenCounter().count(TEXTS)


def test_dimensions_are_passed_through(openai_server):
    provider = Opened(settings(openai_server, dimensions=256))
    assert provider.identity.dimensions == 256
    np.testing.assert_allclose(provider.embed(["x"]).vectors[0], vector_for("x", 256), atol=1e-6)


def test_requests_are_packed_by_count_and_tokens(openai_server):
    by_count = Opened(settings(openai_server, request_tokens=300_000, timeout_s=60.0))
    before = openai_server.state.requests
    result = by_count.embed([f"short text {i}" for i in range(5000)])
    assert result.problems == [None] * 5000
    assert openai_server.state.requests - before == 3  # 2048 + 2048 + 904 inputs
    by_tokens = Opened(settings(openai_server, request_tokens=8192))
    before = openai_server.state.requests
    by_tokens.embed(["word " * 3000] * 6)  # 3000 tokens each: two fit in 8192
    assert openai_server.state.requests - before == 3


def test_transient_failures_are_retried_and_nothing_is_lost(openai_server):
    provider = Opened(settings(openai_server, max_attempts=6))
    for kind in ("500", "429", "timeout", "drop", "malformed"):  # five failures of one request, then success
        openai_server.add_fault(kind)
    result = provider.embed(TEXTS)
    assert result.problems == [None] * len(TEXTS)
    statuses = openai_server.state.statuses
    assert statuses[500] >= 1 and statuses[429] >= 1


def test_a_request_that_keeps_failing_gives_its_rows_the_last_error(openai_server):
    provider = Opened(settings(openai_server, max_attempts=2))
    openai_server.add_fault("500", times=-1)
    result = provider.embed(TEXTS[:3])
    assert {p.reason for p in result.problems} == {"provider_error"}
    assert "gave up after 2 attempts: 500" in result.problems[0].message


def test_one_refused_input_is_isolated_and_the_rest_stored(openai_server):
    provider = Opened(settings(openai_server))
    openai_server.add_fault("reject_input", times=-1, match="commit 13:")
    result = provider.embed(TEXTS)
    bad = [i for i, p in enumerate(result.problems) if p]
    assert bad == [13]
    assert result.problems[13].reason == "rejected_input"
    assert np.isfinite(result.vectors[[i for i in range(40) if i != 13]]).all()


@pytest.mark.parametrize(
    ("kind", "expected_bad"),
    [("nan", {7}), ("wrong_dims", set(range(40))), ("fewer", set(range(40)))],
)
def test_answers_that_fail_the_checks_are_row_errors_never_vectors(openai_server, kind, expected_bad):
    provider = Opened(settings(openai_server))
    openai_server.add_fault(kind, match="commit 7:")
    result = provider.embed(TEXTS)
    bad = {i for i, p in enumerate(result.problems) if p}
    assert bad == expected_bad
    assert {result.problems[i].reason for i in bad} == {"bad_response"}


def test_long_inputs_are_truncated_or_refused_as_asked(openai_server):
    long_text = "token " * 9000
    truncating = Opened(settings(openai_server))
    result = truncating.embed([long_text, "short"])
    assert result.truncated == [True, False] and result.problems == [None, None]
    refusing = Opened(settings(openai_server, long_text="error"))
    result = refusing.embed([long_text, "short"])
    assert result.problems[0].reason == "too_long" and result.problems[1] is None


@pytest.mark.parametrize(
    ("kind", "says"),
    [("401", "API key was refused"), ("403", "may not use model"), ("quota", "no quota left")],
)
def test_refusals_stop_at_once(openai_server, kind, says):
    provider = Opened(settings(openai_server))
    openai_server.add_fault(kind, times=-1)
    with pytest.raises(ProviderStopError, match=says):
        provider.embed(TEXTS)
    assert openai_server.state.requests <= 3  # the probe, then one request per group at most


def test_a_wrong_model_or_key_is_refused_before_any_work(openai_server):
    with pytest.raises(ProviderStopError, match="model 'text-embedding-9' was not found"):
        Opened(settings(openai_server, model="text-embedding-9"))
    with pytest.raises(ProviderStopError, match="API key was refused") as refused:
        Opened(settings(openai_server, api_key=Secret("sk-wrong-secret-123")))
    assert "sk-wrong-secret-123" not in str(refused.value)
    with pytest.raises(ConfigError, match="does not take --dimensions"):
        settings(openai_server, model="text-embedding-ada-002", dimensions=512)


def test_azure_deployments_are_served_through_the_azure_client(openai_server):
    azure = RemoteSettings(
        provider="azure",
        azure_endpoint=openai_server.endpoint,
        azure_deployment="text-embedding-3-small",
        api_key=Secret(openai_server.state.api_key),
    )
    provider = Opened(azure)
    assert provider.identity.revision == "api:text-embedding-3-small"
    np.testing.assert_allclose(provider.embed(["hello"]).vectors[0], vector_for("hello", 1536), atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--provider", "azure"], "--provider azure needs --azure-endpoint"),
        (["--fallback", "openai"], "--fallback needs --provider openai or azure"),
        (["--provider", "openai", "--model", "text-embedding-9"], "model 'text-embedding-9' was not found"),
        (["--provider", "openai", "--model", "text-embedding-ada-002", "--dimensions", "8"], "fixed size"),
        (["--provider", "openai", "--rate-tier", "free", "--max-in-flight", "0"], "--max-in-flight"),
    ],
)
def test_bad_provider_options_stop_before_any_work_with_one_line(
    tmp_path, openai_server, capsys, monkeypatch, extra, says
):
    from vectorize.cli import main as cli_main

    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": "1", "text": "hello"}\n')
    args = ["run", str(source), "--table", "never_made", "--dsn", "postgresql://nobody@127.0.0.1:1/none"]
    args += ["--base-url", openai_server.base_url, "--api-key", openai_server.state.api_key, *extra]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err
