"""Subcommands that read finished runs: eval, sample, inspect, compare."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lmlab.errors import ConfigError, LmlabError
from lmlab.files import claim_default_file

# Each command imports what it uses when it runs (torch for all of them, matplotlib for compare's plot), so
# that `--help` starts at once and `lmlab inspect` loads no sampler.


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a trained run on a split of its data: NLL (nats/token), perplexity, bits per token and per byte."""
    from lmlab.evaluate import evaluate_run
    from lmlab.run.folder import load_run  # the folder alone: not the pipeline, the inspector or the exporters
    from lmlab.training.performance import use_fitting_threads

    use_fitting_threads()
    report = evaluate_run(load_run(args.run), args.split)
    if args.json:
        print(json.dumps(report))
    else:
        bpb = report["bits_per_byte"]
        print(f"{report['split']}: nll {report['nll']:.4f}  perplexity {report['perplexity']:.3f}  "
              f"bits/token {report['bits_per_token']:.4f}  bits/byte {'-' if bpb is None else f'{bpb:.4f}'}  "
              f"({report['tokens']:,} tokens, {report['bytes']:,} bytes)")
    return 0


def eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="which split (default: val)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


SAMPLE_BATCH = 256  # most samples generated at once (fewer where KV caches would not fit): output per batch


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample text from a trained run (temperature, top-k, top-p, prompt); lines mode reports novelty."""
    from lmlab.run.folder import load_run  # the folder alone: not the pipeline, the inspector or the exporters
    from lmlab.sample import SampleOptions, iter_samples
    from lmlab.training.performance import use_fitting_threads

    use_fitting_threads()
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    options = SampleOptions(num_samples=args.n, prompt=args.prompt, max_new_tokens=args.max_new_tokens or 0,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    run = load_run(args.run)
    try:
        run.tokenizer(args.prompt)
    except LmlabError as err:
        raise type(err)(f"--prompt: {err}") from None
    stream = args.n == 1 and not (args.json or args.jsonl) and sys.stdout.isatty()
    on_token = (lambda text: print(text, end="", flush=True)) if stream else None
    # Novelty is counted as samples come: the data's examples are held once, the samples never all at once.
    seen = counts = None
    if run.config.data.mode == "lines":
        seen = _examples_for_novelty(run)
        counts = {f"in_{name}": 0 for name in seen} | {"new": 0} if seen is not None else None
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


def _examples_for_novelty(run) -> dict[str, set[str]] | None:
    """The run's examples by split, to count samples that copy one; None, with a note, when the data is gone
    or changed: sampling needs only the run folder, novelty is a bonus."""
    from lmlab.run.data import prepare_data

    try:
        data = prepare_data(run.config.data, run.tokenizer)
        run.run_dir.require_same_data(data.splits["train"], run.config.data.source)
    except LmlabError as err:
        print(f"novelty not counted: {err}", file=sys.stderr)
        return None
    return {name: set(texts) for name, texts in data.texts.items()}


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
    from lmlab.inspector import format_finding, is_problem
    from lmlab.inspector.report import reinspect

    findings = reinspect(Path(args.run), rebuild_report=args.report)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
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
    """Compare finished runs or seed groups: model, parameters, train/val/test NLL (mean ± SE over seeds), bits
    per char and per byte, tokens/s, time; plot val curves. With two or more, each is compared with the first:
    the difference in val/test NLL with its standard error and a two-sided p-value, paired by seed where the
    groups share seeds and by the same evaluation tokens where they are single runs."""
    if args.block_tokens < 1:
        raise ConfigError(f"--block-tokens must be at least 1, got {args.block_tokens}")
    from lmlab.compare import compare_runs, differences, format_differences, format_table, plot_val_curves, to_json

    rows = compare_runs(args.runs)
    found = differences(rows, block_tokens=args.block_tokens) if len(rows) > 1 and not args.no_differences else []
    for row in rows:
        row["differences"] = [d for d in found if d["run"] == row["run"]]
    plot = _compare_plot_path(args.runs) if args.plot is None else args.plot
    note = None
    if plot and args.plot is None:  # the default is a convenience: a folder it cannot write costs only the plot
        try:  # a name the user did not give never replaces a file of theirs
            claim_default_file(plot, "the validation curves", force=args.force, hint=" (choose a file with --plot)")
            plot_val_curves(rows, plot, x=args.x)
        except (OSError, LmlabError) as err:
            note, plot = f"validation curves not written: {err}", None
    elif plot:
        plot_val_curves(rows, plot, x=args.x)
    print(to_json(rows) if args.json else format_table(rows) + ("\n" + format_differences(found) if found else ""),
          end="")
    if plot:
        print(f"validation curves: {plot}", file=sys.stderr)
    if note:
        print(note, file=sys.stderr)
    if args.tensorboard:
        from lmlab.training.loggers.tensorboard import write_tensorboard_runs

        write_tensorboard_runs(args.runs, args.tensorboard)
        print(f"tensorboard --logdir {args.tensorboard}", file=sys.stderr)
    return 0


def _compare_plot_path(runs: list[str]) -> Path:
    """Beside the runs, never the current folder and never inside a run: in the folder holding them."""
    dirs = [Path(r).resolve() for r in runs]
    folder = Path(os.path.commonpath([d.parent for d in dirs]))
    return folder / (f"{dirs[0].name}-val_curves.png" if len(dirs) == 1 else "val_curves.png")


def compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or seed groups (train --seeds N)")
    p.add_argument("--no-differences", action="store_true", help="only the table: no paired differences")
    p.add_argument("--block-tokens", type=int, default=256, metavar="N", help="stream mode: predicted tokens per "
                   "paired block when single runs are paired by evaluation unit (default: 256)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (with the validation curves)")
    p.add_argument("--plot", metavar="FILE.png", help="where to write the validation curves (default: "
                   "RUN-val_curves.png for one run, val_curves.png for several, in the folder holding them; "
                   "never inside a run; '' for none)")
    p.add_argument("--force", action="store_true", help="let the default plot replace a file of that name")
    p.add_argument("--x", choices=["step", "tokens", "time"], default="step",
                   help="x axis of the plot: steps, training tokens (runs of different batch sizes), or training "
                   "time (runs with a time budget) (default: step)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write one TensorBoard folder with a run per RUN")
