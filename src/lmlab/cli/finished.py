"""Subcommands that read finished runs: eval, sample, inspect, compare."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lmlab.compare import compare_runs, format_table, plot_val_curves, to_json
from lmlab.errors import ConfigError, LmlabError
from lmlab.evaluate import evaluate_run
from lmlab.inspector import format_finding, is_problem
from lmlab.inspector.report import reinspect
from lmlab.run import load
from lmlab.sample import SampleOptions, iter_samples
from lmlab.training.performance import use_fitting_threads
from lmlab.run.data import prepare_data
from lmlab.training.loggers.tensorboard import write_tensorboard_runs


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a trained run on a split of its data: NLL (nats/token), perplexity and bits per token."""
    use_fitting_threads()
    report = evaluate_run(load(args.run), args.split)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['split']}: nll {report['nll']:.4f}  perplexity {report['perplexity']:.3f}  "
              f"bits/token {report['bits_per_token']:.4f}  ({report['tokens']:,} tokens)")
    return 0


def eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="which split (default: val)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


SAMPLE_BATCH = 256  # most samples generated at once (fewer where KV caches would not fit): output per batch


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample text from a trained run (temperature, top-k, top-p, prompt); lines mode reports novelty."""
    use_fitting_threads()
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    options = SampleOptions(num_samples=args.n, prompt=args.prompt, max_new_tokens=args.max_new_tokens or 0,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    run = load(args.run)
    try:
        run.tokenizer(args.prompt)
    except LmlabError as err:
        raise type(err)(f"--prompt: {err}") from None
    stream = args.n == 1 and not (args.json or args.jsonl) and sys.stdout.isatty()
    on_token = (lambda text: print(text, end="", flush=True)) if stream else None
    # Novelty is counted as samples come: the data's examples are held once, the samples never all at once.
    seen = counts = None
    if run.config.data.mode == "lines":
        seen = {name: set(texts) for name, texts in prepare_data(run.config.data, run.tokenizer).texts.items()}
        counts = {f"in_{name}": 0 for name in seen} | {"new": 0}
    if args.json:  # one object, written as it grows: the same bytes as json.dumps of the whole
        print('{"samples": [', end="")
    for i, text in enumerate(iter_samples(run, options, SAMPLE_BATCH, on_token=on_token)):
        if seen is not None:
            hit = next((name for name, texts in seen.items() if text in texts), None)
            counts[f"in_{hit}" if hit else "new"] += 1
        if args.json:
            print(("" if i == 0 else ", ") + json.dumps(text), end="", flush=True)
        elif args.jsonl:
            print(json.dumps({"sample": text}), flush=True)
        elif stream:
            print()
        else:
            print(text, flush=True)
    if args.json:
        print(f'], "novelty": {json.dumps(counts)}}}')
    elif args.jsonl:
        if counts:
            print(json.dumps({"novelty": counts}))
    elif counts:
        print(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()), file=sys.stderr)
    return 0


def sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("-n", type=int, default=10, help="number of samples (default: 10)")
    p.add_argument("--prompt", default="", help="text every sample starts with")
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy; higher is more random (default 1)")
    p.add_argument("--top-k", type=int, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="sample only among the most likely tokens adding up to p")
    p.add_argument("--max-new-tokens", type=int,
                   help="tokens to generate (default: to the end of the line, or 500 in stream mode)")
    p.add_argument("--seed", type=int, default=42, help="seed that makes sampling reproducible (default: 42)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help='print one JSON object: {"samples": [...], "novelty": '
                     '{...}} (null novelty in stream mode)')
    out.add_argument("--jsonl", action="store_true", help='print JSON lines as samples finish: {"sample": TEXT} '
                     'each, then {"novelty": {...}} in lines mode')


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show a run's health findings again (and rebuild report.html with --report)."""
    findings = reinspect(Path(args.run), rebuild_report=args.report)
    if args.json:
        print(json.dumps(findings, indent=2))
        return 0
    if not any(is_problem(f) for f in findings):
        print("no problems found")
    print("\n".join(format_finding(f) for f in findings), end="\n" if findings else "")
    return 0


def inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--report", action="store_true", help="rebuild RUN/report.html")


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare finished runs: model, parameters, train/val/test NLL, bits/char, tokens/s, time; plot val curves."""
    rows = compare_runs(args.runs)
    plot = _compare_plot_path(args.runs) if args.plot is None else args.plot
    if plot:
        plot_val_curves(rows, plot, x=args.x)
    print(to_json(rows) if args.json else format_table(rows), end="")
    if plot:
        print(f"validation curves: {plot}", file=sys.stderr)
    if args.tensorboard:
        write_tensorboard_runs(args.runs, args.tensorboard)
        print(f"tensorboard --logdir {args.tensorboard}", file=sys.stderr)
    return 0


def _compare_plot_path(runs: list[str]) -> Path:
    """Beside the runs, never the current folder: in the run for one, in the folder holding them for several."""
    dirs = [Path(r).resolve() for r in runs]
    folder = dirs[0] if len(dirs) == 1 else Path(os.path.commonpath([d.parent for d in dirs]))
    return folder / "val_curves.png"


def compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (with the validation curves)")
    p.add_argument("--plot", metavar="FILE.png", help="where to write the validation curves (default: "
                   "val_curves.png in the run, or in the folder holding the runs; '' for none)")
    p.add_argument("--x", choices=["step", "time"], default="step",
                   help="x axis of the plot: steps, or training time for runs with a time budget (default: step)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write one TensorBoard folder with a run per RUN")
