"""The `vectorize` command: run an embedding job, search, serve and check a collection.

Configuration errors print one line and exit 2; the layers above the core (jobs, extract)
are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from vectorize.cli_migrate import add_migrate_command, run_migrate
from vectorize.cli_quality import add_quality_commands, run_check, run_nearest, run_report
from vectorize.cli_search import add_search_command, run_search
from vectorize.console import own_output
from vectorize.errors import ConfigError, VectorizeError
from vectorize.models import DEFAULT_MODEL
from vectorize.options import add_database_options
from vectorize.run_options import add_run_options, run_settings

logger = logging.getLogger("vectorize")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vectorize", description="Batch embeddings into Postgres + pgvector.")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    add_run_options(commands.add_parser("run", help="embed a source into a collection"))
    add_migrate_command(commands)

    add_search_command(commands)
    served = commands.add_parser("serve", help="serve the model over HTTP: OpenAI-compatible embeddings, search")
    served.add_argument("--host", default="127.0.0.1")
    served.add_argument("--port", type=int, default=8000)
    served.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="a model to serve; repeat for several, each a deployment of its own "
                        f"(default {DEFAULT_MODEL})")  # fmt: skip
    add_database_options(served)
    served.add_argument("--replicas", type=int, default=1)
    served.add_argument("--cpus-per-replica", type=float, default=1.0, help="also the torch threads of a replica")
    served.add_argument("--matryoshka", action="store_true", help="the model may be shortened with 'dimensions'")
    served.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    add_quality_commands(commands, add_database_options)
    return parser


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM (a service manager's stop) and SIGINT stop the server as Ctrl-C does."""
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    """Start the application and keep it up until interrupted."""
    from vectorize.embedded_pg import database_dsn
    from vectorize.models import read_identity

    if args.replicas < 1 or args.cpus_per_replica <= 0:
        raise ConfigError("--replicas must be at least 1 and --cpus-per-replica more than 0")
    args.models = args.models or [DEFAULT_MODEL]
    identities = [read_identity(model) for model in args.models]  # an unknown model stops here, before Ray starts
    keys = [identity.key for identity in identities]
    if len(set(keys)) < len(keys):
        raise ConfigError("--model names the same model twice: give each model once")
    dsn = database_dsn(args.dsn, args.data_dir)
    with own_output(json_mode=False, show_ray=args.debug):
        return _serve_until_stopped(args, dsn)


def _serve_until_stopped(args: argparse.Namespace, dsn: str) -> int:
    import ray
    from ray import serve

    from serve.launch import start_application

    try:  # Ctrl-C stops the server cleanly, also while it is still starting
        url = start_application(
            models=args.models, dsn=dsn, host=args.host, port=args.port, replicas=args.replicas,
            cpus_per_replica=args.cpus_per_replica, matryoshka=args.matryoshka, address=args.address,
            worker_logs=args.debug,
        )  # fmt: skip
        signal.signal(signal.SIGTERM, _interrupt)  # after Ray's start, whose own handler dumps a stack
        # a server started with Ctrl-C ignored or blocked (a parent's disposition, inherited) still stops on it
        signal.signal(signal.SIGINT, _interrupt)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        print(f"vectorize: serving {', '.join(args.models)} on {url}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        if ray.is_initialized():
            serve.shutdown()


def _run(args: argparse.Namespace) -> int:
    from jobs.launch import run_job

    settings = run_settings(args)
    with own_output(json_mode=args.json, show_ray=args.debug) as console:
        summary = run_job(settings)
        console.print(summary.to_json() if args.json else summary.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug = args.debug or os.environ.get("VECTORIZE_DEBUG") == "1"
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {
            "run": _run,
            "migrate": run_migrate,
            "search": run_search,
            "serve": _serve,
            "check": run_check,
            "nearest": run_nearest,
            "report": run_report,
        }
        return commands[args.command](args)
    except VectorizeError as exc:
        if debug:
            logger.exception("failed")
        print(f"vectorize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vectorize: interrupted; run the same command again to finish the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
