"""The `lmlab` command: a thin layer over the Python API. Each subcommand is a function whose docstring is its
help, listed in COMMANDS; errors a user can act on (LmlabError) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def openmp_wait_policy(load: float, environ: Mapping[str, str]) -> str | None:
    """The OMP_WAIT_POLICY to set for this process, or None to leave OpenMP's default (spin a while, then
    sleep). OpenMP reads it once, when torch loads, so it is chosen from the load average at start-up.
    Spinning threads make 2 threads the fastest on an idle machine, and take a shared core from other jobs
    on a busy one, many times slower than sleeping ones (benchmarks/RESULTS.md has the step times). So
    threads spin only when the load leaves every core free, the condition under which train.threads=auto
    times more than 1 thread (the same rounding). A user's own setting wins."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return None
    return "PASSIVE" if load > 0.5 else None


try:
    _policy = openmp_wait_policy(os.getloadavg()[0], os.environ)
except OSError:  # no load average on this platform: the machine's own defaults
    _policy = None
if _policy:  # before any import that loads torch
    os.environ["OMP_WAIT_POLICY"] = _policy

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Callable

# The command modules import only argparse and torch-free lmlab modules at their top (names, config, data
# sources, errors); each command imports the library code it runs, so `lmlab --help` and `lmlab COMMAND
# --help` load no torch (tests/cli/test_cli.py checks it).
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
from lmlab.cli.sweep import cmd_sweep, sweep_args
from lmlab.cli.tasks import classify_args, cmd_classify, cmd_data, cmd_forecast, data_args, forecast_args
from lmlab.cli.train import cmd_lr_find, cmd_train, lr_find_args, train_args
from lmlab.errors import LmlabError
from lmlab.names import did_you_mean

log = logging.getLogger("lmlab")

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "train": (cmd_train, train_args),
    "eval": (cmd_eval, eval_args),
    "sample": (cmd_sample, sample_args),
    "inspect": (cmd_inspect, inspect_args),
    "lr-find": (cmd_lr_find, lr_find_args),
    "compare": (cmd_compare, compare_args),
    "ladder": (cmd_ladder, ladder_args),
    "sweep": (cmd_sweep, sweep_args),
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


def first_sentence(doc: str) -> str:
    """The docstring's first sentence, on one line: what the command listing shows. A sentence ends at a
    full stop, ? or ! before a capital, a backtick or a dash (so 'e.g. x' does not end one), or with its
    paragraph."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    return re.split(r"(?<=[.?!])\s+(?=[A-Z`-])", text, maxsplit=1)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lmlab", description="Train, look inside, compare and sample language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (func, add_args) in COMMANDS.items():
        doc = (func.__doc__ or "").strip()
        add_args(sub.add_parser(name, help=first_sentence(doc), description=doc))
    return parser


def _text_from_the_shell(argv: list[str]) -> list[str]:
    """Arguments as the user typed them: under a C or POSIX locale Python decodes them as ASCII and keeps
    other bytes as surrogates ('é' becomes '\\udcc3\\udca9'); UTF-8 is what a terminal sends, so those
    bytes are decoded again as UTF-8 (arguments that are not UTF-8 stay as they came)."""
    fixed = []
    for arg in argv:
        if any("\udc80" <= c <= "\udcff" for c in arg):
            with contextlib.suppress(UnicodeError):
                arg = os.fsencode(arg).decode("utf-8")
        fixed.append(arg)
    return fixed


def _stdout_that_cannot_fail_on_text() -> None:
    """Samples may hold any character; a stdout whose encoding cannot show one (PYTHONIOENCODING=ascii, a
    POSIX locale) writes it as an escape instead of failing, and says so once."""
    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("_", "-")
    if encoding in ("utf-8", "utf8") or not hasattr(sys.stdout, "reconfigure"):
        return
    sys.stdout.reconfigure(errors="backslashreplace")
    log.info("stdout's encoding is %s: characters it cannot show are written as \\x.. escapes (set "
             "PYTHONIOENCODING=utf-8 or a UTF-8 locale to see them)", encoding)


def _unknown_command(argv: list[str]) -> str | None:
    """The error for a command lmlab lacks, with the closest one ('trian': did you mean 'train'?), which
    argparse before Python 3.14 does not offer; None when the command is known or missing. The top-level
    options take no value, so the first word not starting with '-' is the command."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    if name is None or name in COMMANDS:
        return None
    return (f"lmlab: error: unknown command {name!r}; {did_you_mean(name, COMMANDS)}choose one of: "
            f"{', '.join(COMMANDS)}")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Ctrl-C anywhere in it, importing torch or loading data included, is one line and exit
    status 130 (while training, run/pipeline.py's signal handler ends the loop after the step and saves a
    checkpoint instead)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    argv = _text_from_the_shell(sys.argv[1:] if argv is None else argv)
    unknown = _unknown_command(argv)
    if unknown:
        print(unknown, file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", handlers=[TqdmLogHandler(sys.stderr)])
    _stdout_that_cannot_fail_on_text()
    try:
        return COMMANDS[args.command][0](args)
    except LmlabError as err:
        print(f"lmlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmlab sample | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 0
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
