"""The `lmlab` command: a thin layer over the Python API. Each subcommand is a function whose docstring is its
help, listed in COMMANDS; errors a user can act on (LmlabError) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import os

# OpenMP reads its wait policy once, when torch loads: threads that spin while they wait take a shared core
# from whoever else runs there, and on a busy machine 2 spinning threads were 10x slower than 2 passive ones
# (benchmarks/RESULTS.md, bench_threads). Before any import that loads torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import logging
import sys
from collections.abc import Callable

from lmlab.cli.common import Parser
from lmlab.cli.finished import (
    cmd_compare,
    cmd_eval,
    cmd_inspect,
    cmd_sample,
    compare_args,
    eval_args,
    inspect_args,
    sample_args,
)
from lmlab.cli.interop import cmd_export, cmd_import, export_args, import_args
from lmlab.cli.ladder import cmd_ladder, ladder_args
from lmlab.cli.tasks import classify_args, cmd_classify, cmd_data, cmd_forecast, data_args, forecast_args
from lmlab.cli.train import cmd_lr_find, cmd_train, lr_find_args, train_args
from lmlab.errors import LmlabError

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "train": (cmd_train, train_args),
    "eval": (cmd_eval, eval_args),
    "sample": (cmd_sample, sample_args),
    "inspect": (cmd_inspect, inspect_args),
    "lr-find": (cmd_lr_find, lr_find_args),
    "compare": (cmd_compare, compare_args),
    "ladder": (cmd_ladder, ladder_args),
    "export": (cmd_export, export_args),
    "import": (cmd_import, import_args),
    "data": (cmd_data, data_args),
    "forecast": (cmd_forecast, forecast_args),
    "classify": (cmd_classify, classify_args),
}


class TqdmLogHandler(logging.StreamHandler):
    """Log lines through tqdm's writer, which clears and redraws the progress bar around them, so a log line
    never lands in the middle of the bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging's own handlers do: report, never raise
            self.handleError(record)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lmlab", description="Train, look inside, compare and sample language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (func, add_args) in COMMANDS.items():
        doc = (func.__doc__ or "").strip()
        add_args(sub.add_parser(name, help=doc.splitlines()[0], description=doc))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", handlers=[TqdmLogHandler(sys.stderr)])
    try:
        return COMMANDS[args.command][0](args)
    except LmlabError as err:
        print(f"lmlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the machine's fault, not the program's: disk full, read-only, no permission
        if os.environ.get("LMLAB_DEBUG"):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"lmlab {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 -- a bug: one line, and the way to see more
        if os.environ.get("LMLAB_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"lmlab {args.command}: internal error: {type(err).__name__}: {first} (re-run with LMLAB_DEBUG=1 for "
              "the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
