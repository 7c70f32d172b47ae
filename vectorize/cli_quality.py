"""The commands that look at what a collection holds: ``check``, ``nearest``, ``report``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from vectorize.errors import ConfigError
from vectorize.quality.verdict import Limits

logger = logging.getLogger(__name__)


def add_quality_commands(commands, database_options) -> None:
    check = commands.add_parser("check", help="check a collection's vectors; exit 1 when a limit fails")
    _check_arguments(check, database_options)
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")

    report = commands.add_parser("report", help="one HTML page of a collection: charts and the check results")
    _check_arguments(report, database_options)
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the page to write (default report.html)")

    near = commands.add_parser("nearest", help="the stored texts nearest to given vectors (.npy or .json)")
    near.add_argument("--table", required=True)
    near.add_argument("--vectors", required=True, type=Path, help=".npy, or .json: a vector, a list of vectors, "
                      "or an OpenAI embeddings answer")  # fmt: skip
    near.add_argument("-k", type=int, default=5, help="texts per vector (default 5)")
    database_options(near)
    near.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _check_arguments(parser: argparse.ArgumentParser, database_options) -> None:
    parser.add_argument("--table", required=True)
    database_options(parser)
    parser.add_argument("--sample", type=int, default=1000, help="rows whose nearest neighbour is looked up (0: none)")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    _limit_options(parser)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    group = parser.add_argument_group("limits (a check fails past its limit)")
    for name, kind, help_text in (
        ("max_zero", int, "zero vectors"),
        ("max_non_finite", int, "vectors holding NaN or infinity"),
        ("max_wrong_dims", int, "vectors of other dimensions than the model's"),
        ("max_other_model", int, "rows of another model identity"),
        ("max_off_norm", int, "vectors whose norm is off the model's normal"),
        ("max_duplicate_vectors", int, "rows sharing one vector with a different text"),
        ("max_identical_texts", int, "ids holding a text stored under another id too"),
        ("max_near_duplicate_rate", float, "share of sampled rows with a different text nearly the same"),
        ("near_duplicate_similarity", float, "the similarity from which a neighbour is a near duplicate"),
        ("min_coverage", float, "share of source rows stored with a vector"),
        ("min_score", float, "quality score, 0-100"),
    ):
        default = getattr(defaults, name)
        shown = "no limit" if default is None else f"{default:g}"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=default,
                           metavar="N" if kind is int else "X", help=f"{help_text} (default {shown})")  # fmt: skip
    group.add_argument(
        "--norm-tolerance", type=float, metavar="X", help="how far off 1.0 a normalised vector's norm may be"
    )


def limits_of(args: argparse.Namespace) -> Limits:
    given = {name: getattr(args, name) for name in Limits.__dataclass_fields__}
    for name, value in given.items():
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} cannot be negative")
    if given["near_duplicate_similarity"] > 1:
        raise ConfigError("--near-duplicate-similarity is a cosine similarity: at most 1")
    return Limits(**given)


def _check_inputs(args: argparse.Namespace) -> tuple[str, str, Limits]:
    """The database, the collection and the limits of ``check`` and ``report``."""
    from vectorize.embedded_pg import database_dsn

    limits = limits_of(args)
    if args.sample < 0:
        raise ConfigError("--sample cannot be negative")
    return database_dsn(args.dsn, args.data_dir), args.table, limits


def _check_options(args: argparse.Namespace) -> dict:
    return {"sample": args.sample, "address": args.address, "norm_tolerance": args.norm_tolerance}


def run_check(args: argparse.Namespace) -> int:
    from jobs.check import check_collection

    report = check_collection(*_check_inputs(args), **_check_options(args))
    print(json.dumps(report.to_dict()) if args.json else report.render())
    return 0 if report.passed else 1


def run_report(args: argparse.Namespace) -> int:
    from jobs.report import write_report

    dsn, table, limits = _check_inputs(args)
    report = write_report(dsn, table, args.out, limits, **_check_options(args))
    verdict = "passed" if report.passed else f"failed: {', '.join(c.name for c in report.checks if not c.passed)}"
    print(f"wrote {args.out} ({report.figures.rows} vectors; checks {verdict}; score {report.score:.1f})")
    return 0


def run_nearest(args: argparse.Namespace) -> int:
    from vectorize.db import connect
    from vectorize.embedded_pg import database_dsn
    from vectorize.quality.given_vectors import load_vectors, nearest_for_vectors

    values = load_vectors(args.vectors)
    dsn = database_dsn(args.dsn, args.data_dir)
    with connect(dsn, vector=False) as conn:
        found = nearest_for_vectors(conn, args.table, values, args.k, f"--vectors {args.vectors}")
    summary = found.summary()
    if args.json:
        results = [{"index": i, "hits": [h.to_dict(digits=6) for h in hits]} for i, hits in enumerate(found.hits)]
        print(json.dumps({"collection": args.table, "results": results, "summary": summary}))
        return 0
    for i, hits in enumerate(found.hits):
        print(f"vector {i}")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank:>2}. {hit.similarity:.3f}  {hit.id}  {' '.join(hit.text.split())[:90]}")
    print(
        f"{summary['count']} vectors; similarity of the nearest text: "
        f"mean {summary['mean']:.3f}, min {summary['min']:.3f}, max {summary['max']:.3f}"
    )
    return 0
