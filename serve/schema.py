"""The request bodies the application takes, checked field by field; anything else is a 400
that names the field and what it must be."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from serve.api_errors import ApiError

MAX_INPUTS = 2048


def parse_json(body: bytes, limit: int) -> dict:
    if len(body) > limit:
        raise ApiError(413, f"the request body is {len(body)} bytes; the limit is {limit}", code="body_too_large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
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
        else:
            raise ApiError(400, "'input' must be a string or a list of strings", param="input")
        if not texts:
            raise ApiError(400, "'input' must not be an empty list", param="input")
        if len(texts) > MAX_INPUTS:
            raise ApiError(400, f"'input' has {len(texts)} items; the limit is {MAX_INPUTS}", param="input")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ApiError(400, f"'input[{i}]' is empty; every input must hold text", param="input")
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

    @classmethod
    def parse(cls, data: dict) -> SearchRequest:
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "'query' must be a non-empty string", param="query")
        collection = data.get("collection")
        if not isinstance(collection, str) or not collection:
            raise ApiError(400, "'collection' must be the name of a collection", param="collection")
        k = data.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise ApiError(400, "'k' must be an integer from 1 to 1000", param="k")
        filters = data.get("filter") or {}
        if not isinstance(filters, dict):
            raise ApiError(400, "'filter' must be an object of metadata key: value", param="filter")
        return cls(query, collection, k, filters)


@dataclass
class NearestRequest:
    """``{"collection": ..., "vectors": [[...], ...] or [...], "k": 10}``"""

    collection: str
    vectors: list
    k: int = 10

    @classmethod
    def parse(cls, data: dict) -> NearestRequest:
        collection = data.get("collection")
        if not isinstance(collection, str) or not collection:
            raise ApiError(400, "'collection' must be the name of a collection", param="collection")
        vectors = data.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise ApiError(400, "'vectors' must be a vector or a non-empty list of vectors", param="vectors")
        if len(vectors) > MAX_INPUTS and isinstance(vectors[0], list):
            raise ApiError(400, f"'vectors' has {len(vectors)} items; the limit is {MAX_INPUTS}", param="vectors")
        k = data.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise ApiError(400, "'k' must be an integer from 1 to 1000", param="k")
        return cls(collection, vectors, k)
