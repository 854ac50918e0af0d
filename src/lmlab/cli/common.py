"""What several subcommands share: the one-line-error parser and the data/model/train options."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from lmlab.config import BUDGET_HELP, load_config_file, parse_set_args
from lmlab.data.sources import EMBEDDED
from lmlab.errors import ConfigError
from lmlab.names import DEFAULT_MODEL, MODEL_NAMES

log = logging.getLogger("lmlab")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback-like noise
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_data_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="SRC", help=f"embedded set ({', '.join(EMBEDDED)}), a text file, a .jsonl/.csv/"
                   ".parquet file (FILE:FIELD picks the text field), an HF datasets folder, or a folder (of text "
                   "files, or one made by `lmlab data prepare`) (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="one example per line, or one long stream cut "
                   "into windows (default: the data set's own)")
    p.add_argument("--encoding", help="text encoding of the data files (default: utf-8)")
    p.add_argument("--model", metavar="NAME", help=f"one of: {', '.join(MODEL_NAMES)} (default: {DEFAULT_MODEL})")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps to train for")
    p.add_argument("--budget", metavar="AMOUNT", help=f"how much to train: {BUDGET_HELP}. Work (flops, tokens, "
                   "steps) becomes a step count before the run, the same on any machine; time stops the run by the "
                   "clock (train.budget; the GPT and Llama rungs default to a FLOPs budget)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="the same as --budget SECONDSs (0: none)")
    p.add_argument("--seed", type=int, help="seed for init, batches and dropout (default: 1337)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    p.add_argument("--config", metavar="FILE", help="a .json or .toml file with data/model/train sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.lr=3e-3 --set model.n_embd=64")


def cli_layers(args: argparse.Namespace) -> list[dict[str, Any]]:
    named = {
        "data": {"source": args.data, "mode": args.mode, "encoding": args.encoding},
        "model": {"name": args.model},
        "train": {"max_steps": args.max_steps, "budget": _budget(args), "seed": args.seed,
                  "device": args.device, "log": getattr(args, "log", None),
                  "early_stopping": getattr(args, "early_stopping", None),
                  "reduce_lr_on_plateau": getattr(args, "reduce_lr_on_plateau", None),
                  "save_top_k": getattr(args, "save_top_k", None)},
    }
    named = {section: {k: v for k, v in values.items() if v is not None} for section, values in named.items()}
    file_values = load_config_file(args.config) if args.config else {}
    return [file_values, named, parse_set_args(args.set)]


def _budget(args: argparse.Namespace) -> str | None:
    """--budget as given, or --time-budget S as "Ss" (0: no budget); None when neither was given."""
    if args.budget is not None and args.time_budget is not None:
        raise ConfigError("--budget and --time-budget both set the budget; give one")
    if args.time_budget is not None:
        return f"{args.time_budget:g}s" if args.time_budget else ""
    return args.budget


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

