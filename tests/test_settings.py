"""The run's settings: the CLI's options reach their fields, defaults come from the fields."""

from __future__ import annotations

import dataclasses

import pytest

from vectorize.cli import build_parser
from vectorize.errors import ConfigError
from vectorize.rate_limits import RateLimits
from vectorize.run_options import run_settings
from vectorize.settings import DEFAULT_STALL_TIMEOUT_S, RunSettings


def settings_of(*argv: str) -> RunSettings:
    args = build_parser().parse_args(["run", *argv])
    args.debug = False
    return run_settings(args)


def test_an_option_left_out_keeps_the_fields_default():
    given = settings_of("data.jsonl", "--table", "t")
    assert given == RunSettings.of(source="data.jsonl", table="t", provider="local", progress=True)
    assert given.runtime.stall_timeout_s == DEFAULT_STALL_TIMEOUT_S
    assert given.chunks.chunk_overlap == 32 and given.runtime.writers == 2 and given.target.dest == "collection"


def test_every_run_option_reaches_its_field():
    given = settings_of(
        "q.jsonl", "--table", "t", "--id-column", "key", "--text", "{a}", "--limit", "7", "--long-text", "chunk",
        "--chunk-tokens", "100", "--chunk-overlap", "4", "--sync", "--dsn", "postgresql://h/db", "--model", "m",
        "--batch-size", "9", "--encode-batch-size", "3", "--address", "ray://h:10001", "--actors", "1,3",
        "--cpus-per-actor", "0.5", "--gpus-per-actor", "0.25", "--writers", "5", "--stall-timeout", "0", "--json",
    )  # fmt: skip
    assert (given.source.id_field, given.source.text, given.source.limit) == ("key", "{a}", 7)
    assert (given.chunks.long_text, given.chunks.chunk_tokens, given.chunks.chunk_overlap) == ("chunk", 100, 4)
    assert (given.target.table, given.target.sync, given.target.dsn) == ("t", True, "postgresql://h/db")
    assert (given.embedding.model, given.embedding.batch_size, given.embedding.encode_batch_size) == ("m", 9, 3)
    runtime = given.runtime
    assert (runtime.ray_address, runtime.actors, runtime.writers, runtime.stall_timeout_s) == (
        "ray://h:10001",
        (1, 3),
        5,
        0,
    )
    assert (runtime.cpus_per_actor, runtime.gpus_per_actor, runtime.progress) == (0.5, 0.25, False)


def test_remote_options_reach_the_provider_and_its_fallback():
    given = settings_of(
        "q.jsonl", "--table", "t", "--provider", "openai", "--base-url", "http://127.0.0.1:9/v1", "--rpm", "60",
        "--request-timeout", "5", "--max-attempts", "2", "--long-text", "error", "--fallback", "openai",
        "--fallback-base-url", "http://127.0.0.1:8/v1",
    )  # fmt: skip
    remote = given.embedding.remote
    assert given.embedding.provider_name == "openai" and remote.model == "text-embedding-3-small"
    assert (remote.base_url, remote.timeout_s, remote.max_attempts, remote.long_text) == (
        "http://127.0.0.1:9/v1",
        5.0,
        2,
        "error",
    )
    assert remote.limits == RateLimits(rpm=60)
    fallback = remote.fallback
    assert (fallback.base_url, fallback.timeout_s, fallback.max_attempts) == ("http://127.0.0.1:8/v1", 5.0, 2)
    assert fallback.limits == RateLimits()


def test_settings_are_frozen_and_checked_once_built():
    settings = RunSettings.of(source="s", table="t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.runtime.writers = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="no run setting named tabel"):
        RunSettings.of(source="s", tabel="t")
    for bad in ({"writers": 0}, {"actors": (3, 1)}, {"batch_size": 0}, {"limit": -1}, {"stall_timeout_s": -1}):
        with pytest.raises(ConfigError):
            RunSettings.of(source="s", table="t", **bad)
