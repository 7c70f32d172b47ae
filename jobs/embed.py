"""``python -m jobs.embed SOURCE --table T ...``: a run with the same arguments as ``vectorize
run``, for ``ray job submit``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vectorize.cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
