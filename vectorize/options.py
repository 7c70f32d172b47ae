"""Command-line options that stand for fields of a settings dataclass, and the database's."""

from __future__ import annotations

import argparse
from pathlib import Path

from vectorize.settings import default_of


def option(group, flags: str | tuple[str, ...], owner: type, name: str, help: str, **kwargs) -> None:
    """``flags`` set field ``name`` of ``owner``; left out, the field keeps its own default."""
    default = default_of(owner, name)
    if default not in (None, "") and not isinstance(default, bool):
        help = f"{help} (default {default:g})" if isinstance(default, float) else f"{help} (default {default})"
    flags = (flags,) if isinstance(flags, str) else flags
    if kwargs.get("action") != "store_true" and "choices" not in kwargs:
        kwargs.setdefault("metavar", flags[0].lstrip("-").upper().replace("-", "_"))
    group.add_argument(*flags, dest=name, default=argparse.SUPPRESS, help=help, **kwargs)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="Postgres DSN (default: $VECTORIZE_DSN, else the embedded server)")
    parser.add_argument("--data-dir", type=Path, help="where the embedded Postgres keeps its data")
