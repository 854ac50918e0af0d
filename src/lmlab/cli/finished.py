"""Subcommands that read finished runs: eval, sample, inspect, compare."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmlab.errors import ConfigError, LmlabError


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a trained run on a split of its data: NLL (nats/token), perplexity and bits per token."""
    from lmlab.evaluate import evaluate_run
    from lmlab.training.run import load_run

    report = evaluate_run(load_run(args.run), args.split)
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


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample text from a trained run (temperature, top-k, top-p, prompt); lines mode reports novelty."""
    from lmlab.sample import SampleOptions, novelty, sample_texts
    from lmlab.training.run import load_run, prepare_data

    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    options = SampleOptions(num_samples=args.n, prompt=args.prompt, max_new_tokens=args.max_new_tokens or 0,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    run = load_run(args.run)
    try:
        run.tokenizer(args.prompt)
    except LmlabError as err:
        raise type(err)(f"--prompt: {err}") from None
    stream = args.n == 1 and not args.json and sys.stdout.isatty()
    on_token = (lambda text: print(text, end="", flush=True)) if stream else None
    samples = sample_texts(run, options, on_token=on_token)
    counts = None
    if run.config.data.mode == "lines":
        counts = novelty(samples, prepare_data(run.config.data, run.tokenizer).texts)
    if args.json:
        print(json.dumps({"samples": samples, "novelty": counts}))
        return 0
    if stream:
        print()
    else:
        for text in samples:
            print(text)
    if counts:
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
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show a run's health findings again (and rebuild report.html with --report)."""
    from lmlab.inspector import format_finding
    from lmlab.inspector.report import reinspect

    findings = reinspect(Path(args.run), rebuild_report=args.report)
    print(json.dumps(findings, indent=2) if args.json else
          "\n".join(format_finding(f) for f in findings) if findings else "no problems found")
    return 0


def inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--report", action="store_true", help="rebuild RUN/report.html")


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare finished runs: model, parameters, train/val/test NLL, bits/char, tokens/s, time; plot val curves."""
    from lmlab.compare import compare_runs, format_table, plot_val_curves, to_json

    rows = compare_runs(args.runs)
    plot = _compare_plot_path(args.runs) if args.plot is None else args.plot
    if plot:
        plot_val_curves(rows, plot, x=args.x)
    print(to_json(rows) if args.json else format_table(rows), end="")
    if plot:
        print(f"validation curves: {plot}", file=sys.stderr)
    return 0


def _compare_plot_path(runs: list[str]) -> Path:
    """Beside the runs, never the current folder: in the run for one, in the folder holding them for several."""
    import os

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
