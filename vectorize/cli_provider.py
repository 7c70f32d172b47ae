"""The command-line options that choose and tune a remote embedding provider."""

from __future__ import annotations

import argparse

from vectorize.errors import ConfigError
from vectorize.options import option
from vectorize.rate_limits import RATE_TIERS, RateLimits
from vectorize.remote_settings import DEFAULT_REMOTE_MODEL, PROVIDERS, BatchApiSettings, RemoteSettings
from vectorize.secret import Secret
from vectorize.settings import field_names

# a fallback provider has its own server, key and limits; it shares the other settings
_NOT_SHARED_WITH_FALLBACK = frozenset({"base_url", "rate_tier", "request_tokens"})
# the fields that options of the same name set; the others are built from several options
_OPTION_FIELDS = frozenset(field_names(RemoteSettings)) - {"provider", "model", "api_key", "limits", "fallback",
                                                            "batch"}  # fmt: skip
_BATCH_FIELDS = frozenset(field_names(BatchApiSettings)) - {"max_attempts"}  # --max-attempts is the requests'
_REMOTE_FLAGS: dict[str, str] = {}  # destination -> flag of every remote-provider option


def _remember_remote_flags(group) -> None:
    """The options of this group, by destination: given without a remote provider, a run refuses them."""
    for action in group._group_actions:
        if action.dest not in ("provider", "long_text", "help"):
            _REMOTE_FLAGS.setdefault(action.dest, action.option_strings[0])


def add_provider_options(parser: argparse.ArgumentParser) -> None:
    from vectorize.providers.base import provider_names

    group = parser.add_argument_group("remote provider (--provider openai or azure)")
    group.add_argument("--provider", choices=provider_names(), default="local", help="where vectors come from")
    option(group, "--base-url", RemoteSettings, "base_url", "any OpenAI-compatible server, e.g. http://host:8000/v1")
    group.add_argument("--api-key", help="default: $OPENAI_API_KEY or $AZURE_OPENAI_API_KEY")
    option(group, "--dimensions", RemoteSettings, "dimensions", "ask the model for vectors of this size", type=int)
    option(group, "--azure-endpoint", RemoteSettings, "azure_endpoint", "default: $AZURE_OPENAI_ENDPOINT")
    option(group, "--azure-deployment", RemoteSettings, "azure_deployment", "default: the model's name")
    option(group, "--api-version", RemoteSettings, "api_version", "Azure OpenAI API version")
    option(group, "--rate-tier", RemoteSettings, "rate_tier", "OpenAI's limits for a usage tier", choices=RATE_TIERS)
    for name, what in (("rpm", "requests per minute"), ("tpm", "tokens per minute")):
        option(group, f"--{name}", RateLimits, name, f"{what}, shared by every actor", type=int)
    for name, what in (("rpd", "requests per day"), ("tpd", "tokens per day")):
        option(group, f"--{name}", RateLimits, name, f"cap on {what}", type=int)
    option(group, "--max-in-flight", RemoteSettings, "max_in_flight", "requests under way, run-wide", type=int)
    option(group, "--max-attempts", RemoteSettings, "max_attempts", "tries before rows are errors", type=int)
    option(group, "--request-timeout", RemoteSettings, "timeout_s", "seconds per request", type=float)
    option(group, "--max-input-tokens", RemoteSettings, "max_input_tokens", "tokens per input", type=int)
    option(group, "--request-tokens", RemoteSettings, "request_tokens", "tokens per request at most "
           "(always: a twelfth of the TPM limit, and 300000)", type=int)  # fmt: skip
    option(group, "--chars-per-token", RemoteSettings, "chars_per_token", "token estimate for non-OpenAI models",
           type=float)  # fmt: skip
    option(group, "--price-per-million", RemoteSettings, "price_per_million", "USD per million tokens", type=float)
    group.add_argument("--fallback", choices=PROVIDERS, help="provider for requests the first gave up on")
    group.add_argument("--fallback-base-url", help="the fallback's OpenAI-compatible server")
    group.add_argument("--fallback-model", help="must be the same model; default: --model")
    _remember_remote_flags(group)


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Batch API (--provider openai or azure)")
    group.add_argument(
        "--batch-api",
        action="store_true",
        help="embed through the provider's Batch API: half "
        "the price, no rate limits, answered within 24 hours; a rerun collects, never pays twice",
    )
    option(group, "--poll-interval", BatchApiSettings, "poll_interval_s", "seconds between looks at the batches, "
           "at most (the first looks come sooner)", type=float)  # fmt: skip
    group.add_argument("--no-wait", dest="wait", action="store_false", default=argparse.SUPPRESS,
                       help="submit the batches and exit; the same command later collects them")  # fmt: skip
    option(group, "--cancel", BatchApiSettings, "cancel", "cancel the collection's open batches, keep what they "
           "finished", action="store_true")  # fmt: skip
    _remember_remote_flags(group)


def remote_settings(args: argparse.Namespace, model: str | None, *, strict: bool = False) -> RemoteSettings | None:
    """RemoteSettings from the options, or None for a provider that is not OpenAI-compatible;
    ``strict`` (a run): a remote model's options given without one are refused."""
    batch_api = getattr(args, "batch_api", False)
    batch_given = {key: value for key, value in vars(args).items() if key in _BATCH_FIELDS}
    if batch_given and not batch_api:
        raise ConfigError("--poll-interval, --no-wait and --cancel go with --batch-api")
    if args.provider not in PROVIDERS:
        if args.fallback:
            raise ConfigError("--fallback needs --provider openai or azure")
        if batch_api:
            raise ConfigError(f"--batch-api is a service's: add --provider openai (or azure); {args.provider!r} "
                              "embeds here")  # fmt: skip
        given = [flag for dest, flag in _REMOTE_FLAGS.items() if vars(args).get(dest) not in (None, False)]
        if strict and given:
            raise ConfigError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} a remote model's: add "
                              "--provider openai (or azure), or drop them to embed with a local model")  # fmt: skip
        return None
    given = {name: value for name, value in vars(args).items() if name in _OPTION_FIELDS}
    # the run's --long-text: "error" refuses an input past the limit; chunked texts never pass it
    given["long_text"] = "error" if given.get("long_text") == "error" else "truncate"
    name = model or DEFAULT_REMOTE_MODEL
    fallback = None
    if args.fallback:
        shared = {key: value for key, value in given.items() if key not in _NOT_SHARED_WITH_FALLBACK}
        fallback = RemoteSettings(
            provider=args.fallback, model=args.fallback_model or name, base_url=args.fallback_base_url, **shared
        )
    limits = RateLimits(**{key: value for key, value in vars(args).items() if key in field_names(RateLimits)})
    return RemoteSettings(
        provider=args.provider,
        model=name,
        api_key=Secret(args.api_key) if args.api_key else None,
        limits=limits,
        fallback=fallback,
        batch=BatchApiSettings(**batch_given) if batch_api else None,
        **given,
    )
