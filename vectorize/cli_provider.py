"""The command-line options that choose and tune a remote embedding provider."""

from __future__ import annotations

import argparse

from vectorize.config import default_of
from vectorize.errors import ConfigError
from vectorize.rate_limits import RATE_TIERS, RateLimits
from vectorize.remote_settings import DEFAULT_REMOTE_MODEL, PROVIDERS, RemoteSettings
from vectorize.secret import Secret


def add_provider_options(parser: argparse.ArgumentParser) -> None:
    from vectorize.providers.base import provider_names

    group = parser.add_argument_group("remote provider (--provider openai or azure)")
    group.add_argument("--provider", choices=provider_names(), default="local", help="where vectors come from")
    group.add_argument("--base-url", help="any OpenAI-compatible server, e.g. http://localhost:8000/v1")
    group.add_argument("--api-key", help="default: $OPENAI_API_KEY or $AZURE_OPENAI_API_KEY")
    group.add_argument("--dimensions", type=int, help="ask the model for vectors of this size")
    group.add_argument("--azure-endpoint", help="default: $AZURE_OPENAI_ENDPOINT")
    group.add_argument("--azure-deployment", help="the deployment name (default: the model's name)")
    group.add_argument(
        "--api-version", default=default_of(RemoteSettings, "api_version"), help="Azure OpenAI API version"
    )
    group.add_argument("--rate-tier", choices=tuple(RATE_TIERS), help="OpenAI's published limits for a usage tier")
    for name, what in (("rpm", "requests per minute"), ("tpm", "tokens per minute")):
        group.add_argument(f"--{name}", type=int, help=f"{what}, shared by every actor")
    for name, what in (("rpd", "requests per day"), ("tpd", "tokens per day")):
        group.add_argument(f"--{name}", type=int, help=f"cap on {what}")
    group.add_argument(
        "--max-in-flight",
        type=int,
        default=default_of(RemoteSettings, "max_in_flight"),
        help="requests under way at once, run-wide",
    )
    group.add_argument(
        "--max-attempts",
        type=int,
        default=default_of(RemoteSettings, "max_attempts"),
        help="tries per request before its rows are errors",
    )
    group.add_argument(
        "--request-timeout", type=float, default=default_of(RemoteSettings, "timeout_s"), help="seconds per request"
    )
    group.add_argument(
        "--max-input-tokens", type=int, default=default_of(RemoteSettings, "max_input_tokens"), help="per input"
    )
    group.add_argument("--request-tokens", type=int, help="tokens per request (default: TPM/12, at most 300000)")
    group.add_argument(
        "--chars-per-token",
        type=float,
        default=default_of(RemoteSettings, "chars_per_token"),
        help="token estimate for non-OpenAI models",
    )
    group.add_argument("--price-per-million", type=float, help="USD per million tokens, for the cost estimate")
    group.add_argument("--fallback", choices=("openai", "azure"), help="provider for requests the first gave up on")
    group.add_argument("--fallback-base-url", help="the fallback's OpenAI-compatible server")
    group.add_argument("--fallback-model", help="must be the same model; default: --model")


def remote_settings(args: argparse.Namespace, model: str | None) -> RemoteSettings | None:
    """RemoteSettings from the options, or None for a provider that is not OpenAI-compatible."""
    if args.provider not in PROVIDERS:
        if args.fallback:
            raise ConfigError("--fallback needs --provider openai or azure")
        return None
    common = dict(
        dimensions=args.dimensions,
        api_version=args.api_version,
        max_in_flight=args.max_in_flight,
        max_attempts=args.max_attempts,
        timeout_s=args.request_timeout,
        # the run's --long-text: "error" refuses an input past the limit; chunked texts never pass it
        long_text="error" if getattr(args, "long_text", None) == "error" else "truncate",
        max_input_tokens=args.max_input_tokens,
        chars_per_token=args.chars_per_token,
        price_per_million=args.price_per_million,
    )
    fallback = None
    name = model or DEFAULT_REMOTE_MODEL
    if args.fallback:
        fallback = RemoteSettings(
            provider=args.fallback,
            model=args.fallback_model or name,
            base_url=args.fallback_base_url,
            azure_endpoint=args.azure_endpoint,
            azure_deployment=args.azure_deployment,
            **common,
        )
    return RemoteSettings(
        provider=args.provider,
        model=name,
        base_url=args.base_url,
        api_key=Secret(args.api_key) if args.api_key else None,
        azure_endpoint=args.azure_endpoint,
        azure_deployment=args.azure_deployment,
        rate_tier=args.rate_tier,
        limits=RateLimits(rpm=args.rpm, tpm=args.tpm, rpd=args.rpd, tpd=args.tpd),
        request_tokens=args.request_tokens,
        fallback=fallback,
        **common,
    )
