"""Long texts: chunks by the model's own tokens, stale chunks deleted, or an error row."""

from __future__ import annotations

import pytest

from extract.records import RecordSpec, prepare_record
from jobs.prepare import split_long_texts
from tests.corpus import write_jsonl
from tests.helpers import errors, query, run
from vectorize.chunking import chunk_by_spans, long_text_policy
from vectorize.errors import ConfigError
from vectorize.providers.base import ProviderRequest, provider_spec
from vectorize.providers.local import LocalTokenSpans
from vectorize.text import TextTemplate
from vectorize.tokens import EstimatedCounter


def local(model: str):
    return provider_spec(ProviderRequest("local", model))


def test_chunks_cover_the_text_with_the_asked_overlap():
    text = "one two three four five six seven eight nine ten"
    spans = EstimatedCounter(chars_per_token=1).spans(text)
    words = [(m, m + len(w)) for m, w in ((text.index(w), w) for w in text.split())]
    assert len(spans) == len(text)
    assert chunk_by_spans(text, words, 4, 1) == [
        "one two three four",
        "four five six seven",
        "seven eight nine ten",
    ]


def test_local_tokens_split_long_texts_only(tiny_model):
    policy = long_text_policy("chunk", 20, 5, local(tiny_model), window=512)
    tokens = LocalTokenSpans(tiny_model)
    text = " ".join(f"token{i} word" for i in range(40))
    chunks = policy.split(text)
    assert len(chunks) > 2
    assert all(len(tokens.spans(chunk)) <= 20 for chunk in chunks)
    starts = [text.find(chunks[0])]
    for chunk in chunks[1:]:
        starts.append(text.find(chunk, starts[-1] + 1))
    assert starts[0] == 0 and text.endswith(chunks[-1])
    for (start, first), next_start in zip(zip(starts, chunks, strict=True), starts[1:], strict=False):
        assert start < next_start < start + len(first)  # each chunk begins inside the one before
    assert policy.split("short text") == ["short text"]
    assert long_text_policy("error", None, 0, local(tiny_model), window=30).split(text) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("chunk", 600, 10, 512), "--chunk-tokens 600: the model takes at most 510"),
        (("chunk", 20, 20, 512), "--chunk-overlap 20"),
        (("sometimes", 20, 0, 512), "--long-text 'sometimes'"),
    ],
)
def test_bad_chunk_settings_are_config_errors(tiny_model, args, message):
    with pytest.raises(ConfigError, match=message):
        mode, chunk_tokens, overlap, window = args
        long_text_policy(mode, chunk_tokens, overlap, local(tiny_model), window=window)


@pytest.mark.usefixtures("ray_cluster")
def test_long_text_is_stored_as_chunks_and_a_shrunk_text_loses_its_tail(tmp_path, tiny_model, pg_dsn, table_name):
    long_text = " ".join(f"sentence {i} of a long document about chunking." for i in range(30))
    rows = [{"id": "doc", "text": long_text}, {"id": "note", "text": "a short note"}]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    options = {"long_text": "chunk", "chunk_tokens": 40, "chunk_overlap": 8}
    first = run(source, table_name, tiny_model, pg_dsn, **options)
    stored = query(pg_dsn, "SELECT chunk, text FROM {t} WHERE id = 'doc' ORDER BY chunk", table=table_name)
    assert len(stored) > 4 and [c for c, _ in stored] == list(range(len(stored)))
    assert all(text in long_text for _, text in stored)
    assert stored[0][1].startswith("sentence 0 of") and long_text.endswith(stored[-1][1])
    assert first.embedded == len(stored) + 1

    again = run(source, table_name, tiny_model, pg_dsn, **options)
    assert (again.embedded, again.unchanged) == (0, len(stored) + 1)

    rows[0]["text"] = " ".join(f"sentence {i} of a long document about chunking." for i in range(8))
    write_jsonl(source, rows)
    shrunk = run(source, table_name, tiny_model, pg_dsn, **options)
    after = query(pg_dsn, "SELECT chunk FROM {t} WHERE id = 'doc' ORDER BY chunk", table=table_name)
    assert 1 < len(after) < len(stored) and [c for (c,) in after] == list(range(len(after)))
    assert shrunk.failed == 0

    assert errors(pg_dsn, table_name) == {}


def test_a_text_past_the_window_is_an_error_row_when_asked(tiny_model):
    policy = long_text_policy("error", None, 0, local(tiny_model), window=512)
    record = {"id": "doc", "text": " ".join(f"sentence {i} of a long document." for i in range(80))}
    prepared = split_long_texts([prepare_record(record, RecordSpec("id", TextTemplate.parse("text")))], policy)
    assert [(row["id"], row["status"], row["reason"]) for row in prepared] == [("doc", "error", "too_long")]
    assert prepared[0]["raw"].startswith("sentence 0 of")
