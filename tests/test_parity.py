"""Stored vectors equal plain SentenceTransformer.encode of the same stored texts (real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.corpus import commit_rows, write_jsonl
from tests.helpers import stored
from vectorize.models import DEFAULT_MODEL, load_sentence_transformer, resolve_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_stored_vectors_match_plain_encode(tmp_path, pg_dsn, table_name):
    from tests.helpers import run

    rows = commit_rows(48)
    summary = run(write_jsonl(tmp_path / "parity.jsonl", rows), table_name, DEFAULT_MODEL, pg_dsn, batch_size=24)
    assert summary.failed == 0
    got = stored(pg_dsn, table_name)
    assert len(got) == 48
    ids = sorted(got)
    model = load_sentence_transformer(resolve_model_dir(DEFAULT_MODEL)[1], "cpu")
    expected = model.encode([got[i][0] for i in ids], batch_size=16, convert_to_numpy=True)
    vectors = np.stack([got[i][1] for i in ids])
    cosine = (vectors * expected).sum(axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.9999, cosine.min()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
