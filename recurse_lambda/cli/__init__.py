"""The ``recurse-lambda`` command: ``demo``, ``simulate``, chain control (``status``, ``list``, ``cancel``,
``resume``) and ``--version``.

Exit status: 0 on success, 1 when a chain did not succeed (or the run broke), 2 for a usage error.
Nothing in the library imports this module.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from .common import UsageError

PROG = "recurse-lambda"


# The chain-control commands need neither the simulator nor the demo: given one of them, only its module is
# imported (``recurse-lambda status`` stays quick and imports no simulator).
CONTROL_COMMANDS = frozenset({"status", "list", "cancel", "resume"})


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser; given ``argv`` naming a chain-control command, with only those commands."""
    from . import control as _cli_control

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run long tasks on AWS Lambda as a fork-free chain of self-invocations; try them locally.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    command = next((a for a in argv or () if not a.startswith("-")), None)
    if command not in CONTROL_COMMANDS:
        from . import demo as _cli_demo
        from . import emulate as _cli_emulate
        from . import simulate as _cli_simulate

        _cli_demo.add_parser(sub)
        _cli_simulate.add_parser(sub)
        _cli_emulate.add_parser(sub)
    _cli_control.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and bad arguments; return its status
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        status: int = args.command(args)
        return status
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (
        Exception
    ) as exc:  # a run that broke (an unreachable endpoint, a simulator limit): say what, exit 1
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
