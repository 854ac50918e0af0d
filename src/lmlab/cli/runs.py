"""Subcommands on finished runs: eval, sample, inspect, compare, ladder, export, import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmlab.cli.common import fmt
from lmlab.data.sources import EMBEDDED
from lmlab.errors import ConfigError, LmlabError
from lmlab.models import count_parameters


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a trained run on a split of its data: NLL (nats/token), perplexity and bits per token."""
    from lmlab.evaluate import evaluate_run
    from lmlab.train.run import load_run

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
    from lmlab.train.run import load_run, prepare_data

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
    from lmlab.inspect import format_finding
    from lmlab.inspect.report import reinspect

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
    if args.plot:
        plot_val_curves(rows, args.plot)
    print(to_json(rows) if args.json else format_table(rows), end="")
    if args.plot:
        print(f"validation curves: {args.plot}", file=sys.stderr)
    return 0


def compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (with the validation curves)")
    p.add_argument("--plot", metavar="FILE.png", default="val_curves.png",
                   help="where to write the validation curves (default: val_curves.png; '' for none)")


def cmd_ladder(args: argparse.Namespace) -> int:
    """Train every rung (counted bigram to the largest model) on one data set, each within a time budget,
    then write the comparison table and validation curves into one folder."""
    from lmlab.compare import format_table
    from lmlab.ladder import JSON_FILE, PLOT_FILE, TABLE_FILE, run_ladder

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    out = Path(args.out)

    def on_rung_end(name: str, summary: dict[str, Any]) -> None:
        nll = summary["nll"]
        print(f"{name}: val {fmt(nll.get('val'))}  test {fmt(nll.get('test'))} after {summary['steps']} steps "
              f"({summary['train_seconds']:.0f} s)", file=sys.stderr, flush=True)

    rows = run_ladder(args.data, out, budget=args.budget, models=models, mode=args.mode, seed=args.seed,
                      device=args.device, force=args.force, fit_schedule=not args.keep_steps,
                      on_rung_end=on_rung_end)
    print(format_table(rows), end="")
    print(f"table: {out / TABLE_FILE}, {out / JSON_FILE}; plot: {out / PLOT_FILE}")
    return 0


def ladder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="SRC", default="names",
                   help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="one example per line, or one long stream")
    p.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                   help="training time per rung (default: 60)")
    p.add_argument("--out", metavar="DIR", default="runs/ladder", help="folder for the runs, table and plot "
                   "(default: runs/ladder)")
    from lmlab.ladder import default_rungs

    p.add_argument("--models", metavar="A,B,...", help="rungs to train (default: one per architecture: "
                   f"{', '.join(default_rungs())})")
    p.add_argument("--seed", type=int, default=1337, help="seed for every rung (default: 1337)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    p.add_argument("--force", action="store_true", help="overwrite runs already in --out")
    p.add_argument("--keep-steps", action="store_true", help="keep each rung's registered max_steps even when "
                   "the budget cuts training off before its schedule ends")


def cmd_export(args: argparse.Namespace) -> int:
    """Write a trained run for other tools: the HF transformers GPT-2 format, or ONNX.

    hf: config.json, model.safetensors and tokenizer files that AutoModelForCausalLM and AutoTokenizer
    load offline. onnx: model.onnx (input_ids -> logits), checked against onnxruntime when installed."""
    from lmlab.train.run import load_run

    run = load_run(args.run)
    if args.format == "onnx":
        from lmlab.export.onnx import export_onnx

        out, diff = export_onnx(run, args.out)
        checked = "not checked (onnxruntime is not installed)" if diff is None else \
            f"onnxruntime logits within {diff:.1e} of lmlab's"
        print(f"wrote {out / 'model.onnx'}: input_ids (B, T) -> logits (B, T, V); {checked}")
        return 0
    from lmlab.export import export_hf

    out = export_hf(run, args.out)
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          "and AutoTokenizer.from_pretrained")
    return 0


def export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--format", choices=["hf", "onnx"], default="hf",
                   help="hf: transformers GPT-2 (default); onnx: an ONNX graph (needs lmlab[onnx])")
    p.add_argument("out", metavar="OUT", help="directory to write")


def cmd_import(args: argparse.Namespace) -> int:
    """Turn a local HF GPT-2 directory into an lmlab run that samples, evaluates and fine-tunes (--resume)."""
    from lmlab.export import import_hf

    data = {k: v for k, v in {"source": args.data, "mode": args.mode}.items() if v is not None}
    run = import_hf(args.hf_dir, args.out, data)
    print(f"{run.run_dir}: GPT, {count_parameters(run.model):,} parameters, vocab {run.tokenizer.vocab_size}, "
          f"context {run.model.config.block_size}. Sample: lmlab sample {run.run_dir}; fine-tune on "
          f"{run.config.data.source}: lmlab train --out {run.run_dir} --resume --max-steps N")
    return 0


def import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_dir", metavar="HF_DIR", help="a local GPT-2 directory (config.json, model.safetensors, "
                   "tokenizer.json)")
    p.add_argument("--out", required=True, metavar="RUN", help="the run directory to create")
    p.add_argument("--data", metavar="SRC", help="the data eval and fine-tuning use (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="lines or stream (default: the data set's own)")
