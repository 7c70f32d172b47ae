"""``vectorize search``: the stored texts nearest to a query, with the collection's own model.

A collection a remote model made remembers that model's settings (never its key), so only the
key is needed to search it; options given override what it remembers."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from vectorize.cli_provider import add_provider_options, remote_settings
from vectorize.errors import ConfigError, ModelMismatchError
from vectorize.options import add_database_options
from vectorize.store.search import SEARCH_MODES

# the settings a collection remembers, by the name of the option that gives each
_REMEMBERED = ("base_url", "azure_endpoint", "azure_deployment", "api_version", "dimensions")


def add_search_command(commands) -> None:
    search = commands.add_parser("search", help="nearest stored texts to a query")
    search.add_argument("query")
    search.add_argument("--table", required=True)
    search.add_argument("-k", type=int, default=5, help="how many hits (default 5)")
    search.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE", help="metadata every hit has (repeatable)"
    )
    search.add_argument(
        "--mode", default="vector", help=f"{', '.join(SEARCH_MODES)}: by meaning, by words, or both (default vector)"
    )
    search.add_argument("--model", help="where the collection's model is, if not where it was loaded from")
    add_database_options(search)
    search.add_argument("--json", action="store_true")
    add_provider_options(search)


def run_search(args: argparse.Namespace) -> int:
    from vectorize.db import connect
    from vectorize.embedded_pg import database_dsn
    from vectorize.providers.base import embed_blocking
    from vectorize.search import check_k, check_mode, parse_filters, search
    from vectorize.store.collection import Collection
    from vectorize.store.registry import registered_model
    from vectorize.text import clean_text

    check_k(args.k)
    check_mode(args.mode)
    filters = parse_filters(args.filter)
    query = clean_text(args.query)
    if not query:
        raise ConfigError("the query is empty")
    collection = Collection(args.table)
    dsn = database_dsn(args.dsn, args.data_dir)
    for attempt in (1, 2):
        found = registered_model(dsn, collection)
        provider = _query_provider(args, collection, found)
        vector = embed_blocking(provider, [query]).vectors[0]
        try:
            with connect(dsn) as conn:
                hits = search(conn, collection.name, vector, args.k, provider.identity, filters, args.mode, query)
            break
        except ModelMismatchError:  # a migration's swap between reading the model and searching
            if attempt == 2:
                raise
    if args.json:
        print(json.dumps([h.to_dict(digits=4) for h in hits]))
        return 0
    for rank, hit in enumerate(hits, 1):
        first = " ".join(hit.text.split())[:100]
        print(f"{rank:>2}. {hit.similarity:.3f}  {hit.id}  {first}")
    if not hits:
        print(f"no hits in collection {collection.name!r}")
    return 0


def _query_provider(args: argparse.Namespace, collection, found):
    """The collection's own model, from the provider given or remembered, checked against its
    registered identity."""
    from vectorize.providers.base import ProviderRequest, provider_spec

    identity = found.identity
    if identity.revision.startswith("api:"):
        remembered = found.provider or {}
        name = args.provider if args.provider != "local" else remembered.get("provider")
        if name is None:
            raise ConfigError(
                f"collection {collection.name!r} was embedded by {found.model_source}; "
                "pass the same --provider (and --base-url or --azure-endpoint) to search it"
            )
        given = {**{key: remembered[key] for key in _REMEMBERED if key in remembered}, **vars(args), "provider": name}
        remote = remote_settings(argparse.Namespace(**given), args.model or remembered.get("model") or identity.name)
        assert remote is not None
        known = remote.known_model
        if remote.dimensions is None and not (known and known.dimensions == identity.dimensions):
            remote = replace(remote, dimensions=identity.dimensions)
        request = ProviderRequest(name, remote.model, remote)
        where = f"{remote.provider} {remote.model}"
    else:
        request = ProviderRequest(args.provider, args.model or found.model_source)
        where = f"the model at {request.model}"
    spec = provider_spec(request)
    if not spec.identity.same_model(identity):
        raise ConfigError(
            f"{where} is not the one collection {collection.name!r} was embedded with "
            f"({'; '.join(spec.identity.differences(identity))}); pass --model with that model"
        )
    return spec.open()
