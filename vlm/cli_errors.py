"""One-line errors for the command line: a bad input is a sentence, not a traceback.

Every ``radio-vlm`` subcommand (and ``python -m vlm.training.cli`` under ``accelerate
launch``) runs through ``run_reporting_errors``: the errors a user can fix (a bad value or
file: ValueError, OSError; a run that diverged: ArithmeticError) print as
``radio-vlm train: error: <what was wrong, the value, the fix>`` with exit code 2; anything
else is a bug and keeps its traceback. ``--debug`` shows the traceback for every error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError, ArithmeticError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run_reporting_errors(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str
) -> int:
    """``run(args)``; a user-fixable error becomes one line on stderr and exit code 2."""
    try:
        return run(args)
    except USER_ERRORS as err:
        if getattr(args, "debug", False):
            raise
        message = str(err).strip() or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        print(f"{prog}: (add --debug for the traceback)", file=sys.stderr)
        return 2
