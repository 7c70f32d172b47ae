"""The one place the ``openai`` SDK's errors are translated, for the probe and for every request:
a request to retry, an input the server rejects, or a refusal of the whole run with what to fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vectorize.rate_headers import Headers


@dataclass(frozen=True)
class Failure:
    """A request that got no usable answer: ``retry`` it, or ``reject``: the server refused an input."""

    kind: str
    message: str
    retry_after: float | None = None
    refusal: str | None = None  # the provider refused the run as a whole: what to fix
    status: int | None = None  # the HTTP status, where there was one


def api_failure(exc: Exception, where: str, model: str, scrub: Callable[[str], str]) -> Failure:
    """What the ``openai`` SDK raised, as a Failure: the one place its errors are translated."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = scrub(f"{status} from {where}: {exc.message}")
        refusal = refusal_message(status, getattr(exc, "code", None), model, message)
        if status in (408, 409, 429) or status >= 500:
            return Failure("retry", message, Headers.parse(exc.response.headers).retry_after, refusal, status)
        return Failure("reject", message, None, refusal, status)
    if isinstance(exc, openai.APIConnectionError):  # timeouts and dropped connections too
        return Failure("retry", scrub(f"{type(exc).__name__} talking to {where}: {exc}"))
    return Failure("retry", scrub(f"malformed response from {where}: {exc}")[:500])  # not an embeddings body


def refusal_message(status: int, code: str | None, model: str, message: str) -> str | None:
    """What to fix when the provider refuses the run as a whole; None when it did not."""
    if status == 429 and code == "insufficient_quota":
        return f"the account behind the API key has no quota left; add credit, then run again ({message})"
    what = {
        401: "the API key was refused, or none was given; set a valid key (OPENAI_API_KEY, AZURE_OPENAI_API_KEY "
        "or --api-key)",
        403: f"this key may not use model {model!r}; use a key or project that may",
        404: f"model {model!r} was not found there; check --model (or the Azure deployment) and --base-url",
    }.get(status)
    return f"{what} ({message})" if what else None
