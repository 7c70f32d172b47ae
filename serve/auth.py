"""Bearer tokens from ``VECTORIZE_API_KEYS`` (comma-separated), compared in constant time."""

from __future__ import annotations

import hmac
import os


def configured_keys() -> list[bytes]:
    return [k.strip().encode() for k in os.environ.get("VECTORIZE_API_KEYS", "").split(",") if k.strip()]


def authorized(header: str | None, keys: list[bytes]) -> bool:
    """True when no keys are configured, or the header is ``Bearer <one of them>``. Every key is
    compared, whichever matches, so the time taken does not tell which one came close."""
    if not keys:
        return True
    scheme, _, token = (header or "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched
