"""What a response says about the rate budget: its ``x-ratelimit-*`` headers and ``Retry-After``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class Headers:
    """What a response said about the budget; ``None`` where it said nothing."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None  # seconds until the token budget is whole again
    retry_after: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> Headers:
        lower = {k.lower(): v for k, v in headers.items()}

        def number(name: str) -> int | None:
            try:
                return int(float(lower[name]))
            except (KeyError, ValueError):
                return None

        retry_after = None
        if "retry-after-ms" in lower:
            retry_after = _seconds(lower["retry-after-ms"], scale=0.001)
        elif "retry-after" in lower:
            retry_after = _seconds(lower["retry-after"], scale=1.0)
        return cls(
            limit_requests=number("x-ratelimit-limit-requests"),
            limit_tokens=number("x-ratelimit-limit-tokens"),
            remaining_requests=number("x-ratelimit-remaining-requests"),
            remaining_tokens=number("x-ratelimit-remaining-tokens"),
            reset_tokens=_duration(lower.get("x-ratelimit-reset-tokens")),
            retry_after=retry_after,
        )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str | None) -> float | None:
    """OpenAI's durations: ``1.5s``, ``6m0s``, ``20ms``; a bare number is seconds."""
    if not value:
        return None
    text = value.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _seconds(value: str, scale: float) -> float | None:
    try:
        return max(0.0, float(value) * scale)
    except ValueError:
        return None
