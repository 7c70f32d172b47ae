"""The request bodies the application takes, checked field by field; anything else is a 400
that names the field and what it must be."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from serve.api_errors import ApiError
from vectorize.sanitize import is_clean
from vectorize.search import MAX_K
from vectorize.store.search import SEARCH_MODES

MAX_INPUTS = 2048
MAX_FILTER_DEPTH = 8
TOKEN_IDS = (
    "'input' holds token ids; this server takes text: in LangChain's OpenAIEmbeddings pass "
    "check_embedding_ctx_length=False (it then sends the strings), or send 'input' as strings"
)


def parse_json(body: bytes, limit: int) -> dict:
    if len(body) > limit:
        raise ApiError(413, f"the request body is {len(body)} bytes; the limit is {limit}", code="body_too_large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deep", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return data


@dataclass
class EmbeddingsRequest:
    texts: list[str]
    model: str | None
    encoding_format: str = "float"
    dimensions: int | None = None

    @classmethod
    def parse(cls, data: dict) -> EmbeddingsRequest:
        raw = data.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
            texts = raw
        elif isinstance(raw, list) and raw and all(_token_ids(t) for t in (raw if isinstance(raw[0], list) else [raw])):
            raise ApiError(400, TOKEN_IDS, param="input", code="token_ids_not_supported")
        else:
            raise ApiError(400, "'input' must be a string or a list of strings", param="input")
        if not texts:
            raise ApiError(400, "'input' must not be an empty list", param="input")
        if len(texts) > MAX_INPUTS:
            raise ApiError(400, f"'input' has {len(texts)} items; the limit is {MAX_INPUTS}", param="input")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ApiError(400, f"'input[{i}]' is empty; every input must hold text", param="input")
            _check_unicode(text, f"input[{i}]", "input")
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "'model' must be a string", param="model")
        encoding = data.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        dimensions = data.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
        ):
            raise ApiError(400, "'dimensions' must be a positive integer", param="dimensions")
        return cls(texts, model, encoding, dimensions)


@dataclass
class SearchRequest:
    query: str
    collection: str
    k: int = 10
    filter: dict = field(default_factory=dict)
    mode: str = "vector"

    @classmethod
    def parse(cls, data: dict) -> SearchRequest:
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "'query' must be a non-empty string", param="query")
        _check_unicode(query, "query", "query")
        collection, k = _collection(data), _k(data)
        filters = data.get("filter") or {}
        if not isinstance(filters, dict):
            raise ApiError(400, "'filter' must be an object of metadata key: value", param="filter")
        _check_filter(filters)
        mode = data.get("mode", "vector")
        if mode not in SEARCH_MODES:
            raise ApiError(400, f"'mode' must be one of {', '.join(SEARCH_MODES)}", param="mode")
        return cls(query, collection, k, filters, mode)


@dataclass
class NearestRequest:
    """``{"collection": ..., "vectors": [[...], ...] or [...], "k": 10}``"""

    collection: str
    vectors: list
    k: int = 10

    @classmethod
    def parse(cls, data: dict) -> NearestRequest:
        collection = _collection(data)
        vectors = data.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise ApiError(400, "'vectors' must be a vector or a non-empty list of vectors", param="vectors")
        if len(vectors) > MAX_INPUTS and isinstance(vectors[0], list):
            raise ApiError(400, f"'vectors' has {len(vectors)} items; the limit is {MAX_INPUTS}", param="vectors")
        return cls(collection, vectors, _k(data))


def _collection(data: dict) -> str:
    collection = data.get("collection")
    if not isinstance(collection, str) or not collection:
        raise ApiError(400, "'collection' must be the name of a collection", param="collection")
    return collection


def _k(data: dict) -> int:
    k = data.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ApiError(400, f"'k' must be an integer from 1 to {MAX_K}", param="k")
    return k


def _token_ids(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def _check_unicode(text: str, name: str, param: str) -> None:
    """Refused before any batching, so that one bad request never fails the others batched with it."""
    if not is_clean(text):
        what = "a NUL character" if "\x00" in text else "a lone surrogate (invalid UTF-16)"
        raise ApiError(400, f"'{name}' holds {what}; send valid Unicode text", param=param)


def _check_filter(filters: dict) -> None:
    """What jsonb containment can take: no NUL, no lone surrogate, at most MAX_FILTER_DEPTH levels."""
    level: list = [filters]
    for depth in range(MAX_FILTER_DEPTH + 1):
        nested = []
        for value in level:
            items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
            for key, item in items:
                for text in (key, item):
                    if isinstance(text, str) and not is_clean(text):
                        message = "'filter' holds a NUL or a lone surrogate; send valid Unicode"
                        raise ApiError(400, message, param="filter")
                if isinstance(item, dict | list):
                    nested.append(item)
        if not nested:
            return
        if depth == MAX_FILTER_DEPTH:
            break
        level = nested
    raise ApiError(400, f"'filter' is nested more than {MAX_FILTER_DEPTH} levels deep", param="filter")
