"""The ``neurohook`` command line: extract, analyze, report, demo, corpus build, models train.

Every option can come from a flag or from a TOML file given with ``--config``: top-level keys apply
to every command, a ``[extract]`` (or ``[corpus-build]``, ``[models-train]``, ...) table to one
command; flags win. A user mistake (a missing file, a bad config key, an unknown layer or model)
ends with one line on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from neurohook.cli.commands import HANDLERS
from neurohook.cli.options import GROUPS, UserError, build_parser, resolve
from neurohook.errors import UserInputError

__all__ = ["main", "build_parser", "UserError"]


def one_line(error: BaseException) -> str:
    """An error message on one line (at most 400 characters)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    one = "; ".join(lines) or type(error).__name__
    return one if len(one) <= 400 else one[:397] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a one-line usage error (2)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in GROUPS:  # a group without a verb: its help
        parser.parse_args([args.command, "--help"])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not args.verbose:
        logging.getLogger("neurohook").setLevel(logging.INFO)
    try:
        return HANDLERS[args.command](resolve(args))
    except UserInputError as e:
        if args.debug:
            raise
        print(f"neurohook: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurohook: interrupted (completed shards are kept; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
