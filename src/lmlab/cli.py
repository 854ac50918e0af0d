"""The `lmlab` command: a thin layer over the Python API. Each subcommand is one function below whose
docstring is its help; errors a user can act on (LmlabError) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab.config import load_config_file, parse_set_args
from lmlab.data.sources import EMBEDDED
from lmlab.errors import CheckpointError, ConfigError, LmlabError
from lmlab.models import DEFAULT_MODEL, REGISTRY, count_parameters

log = logging.getLogger("lmlab")

RUN_FILES = ("config.json", "tokenizer.json", "model.safetensors", "trainer_state.pt", "metrics.jsonl",
             "summary.json", "findings.json", "report.html")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback-like noise
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------------------------------------
# train


def _add_data_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="SRC", help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder "
                   "(of text files, or one made by `lmlab data prepare`) (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="one example per line, or one long stream cut "
                   "into windows (default: the data set's own)")
    p.add_argument("--encoding", help="text encoding of the data files (default: utf-8)")
    p.add_argument("--model", metavar="NAME", help=f"one of: {', '.join(REGISTRY)} (default: {DEFAULT_MODEL})")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps to train for")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop training after this long")
    p.add_argument("--seed", type=int, help="seed for init, batches and dropout (default: 1337)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    p.add_argument("--config", metavar="FILE", help="a .json or .toml file with data/model/train sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.lr=3e-3 --set model.n_embd=64")


def _cli_layers(args: argparse.Namespace) -> list[dict[str, Any]]:
    named = {
        "data": {"source": args.data, "mode": args.mode, "encoding": args.encoding},
        "model": {"name": args.model},
        "train": {"max_steps": args.max_steps, "time_budget": args.time_budget, "seed": args.seed,
                  "device": args.device},
    }
    named = {section: {k: v for k, v in values.items() if v is not None} for section, values in named.items()}
    file_values = load_config_file(args.config) if args.config else {}
    return [file_values, named, parse_set_args(args.set)]


def _default_out(model_name: str, source: str) -> Path:
    stem = Path(source).stem if source not in EMBEDDED else source
    base = Path("runs") / f"{model_name}-{stem}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model and print samples. Plain `lmlab train` trains the default model on the embedded names.
    Under `torchrun --nproc_per_node N -m lmlab train ...` it trains on N processes (DDP, or FSDP2 with
    --set train.parallel=fsdp); rank 0 alone logs and writes the run directory."""
    from lmlab.train.distributed import Parallel, launched_by_torchrun

    if not launched_by_torchrun():
        return _train(args, Parallel())
    parallel = Parallel()
    try:
        from lmlab.train.run import layered_config, resolve_config

        train = resolve_config(layered_config(*_cli_layers(args))).train
        parallel = Parallel.from_environment(train.device, train.parallel)
        if not parallel.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        return _train(args, parallel)
    finally:
        parallel.close()


def _train(args: argparse.Namespace, parallel) -> int:
    from lmlab.train.run import layered_config, load_run_config, prepare_data, resolve_config

    layers = _cli_layers(args)
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        saved, _ = load_run_config(out)
        config = resolve_config(layered_config(saved.to_dict(), *layers))
        if config.data != saved.data or config.model != saved.model or config.model_name != saved.model_name:
            raise CheckpointError(f"{out}: --resume continues the run's own data and model; change only train.*")
    else:
        config = resolve_config(layered_config(*layers))
        out = out or _default_out(config.model_name, config.data.source)
        if (out / "config.json").exists() and not args.force:
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or --force to "
                                  "start over")

    from lmlab.tokenizers import load_tokenizer
    from lmlab.train.run import build_model, resolved_data_config

    tokenizer = load_tokenizer(out / "tokenizer.json") if args.resume else None
    data = prepare_data(config.data, tokenizer)
    config = dataclasses.replace(config, data=resolved_data_config(config.data, data))
    block_size = max(ds.block_size for ds in data.splits.values())
    if args.resume:  # the model keeps its own context (an imported GPT-2's, wider than the data needs)
        block_size = max(load_run_config(out)[1], block_size)
    model = build_model(config, data.tokenizer, block_size)
    log.info("%s: %s parameters; data %s (%s mode, vocab %d, %s train tokens) -> %s", config.model_name,
             f"{count_parameters(model):,}", config.data.source, data.mode, data.tokenizer.vocab_size,
             f"{data.splits['train'].num_predictions:,}", out)
    if args.force and not args.resume:  # only now: bad input above must leave the old run untouched
        parallel.barrier()  # every rank has looked at the folder before rank 0 clears it
        if parallel.is_main:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
                (out / f".{name}.tmp").unlink(missing_ok=True)  # a crashed write's leftovers
    return _fit_and_report(config, data, model, out, args.resume, parallel)


def _fit_and_report(config, data, model, out: Path, resume: bool, parallel=None) -> int:
    from lmlab.tokenizers import load_tokenizer
    from lmlab.train.distributed import Parallel
    from lmlab.train.run import write_run_files
    from lmlab.train.trainer import Trainer

    parallel = parallel or Parallel()
    trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=out,
                      parallel=parallel)
    if resume:  # before writing anything, so a checkpoint that cannot be resumed leaves the run as it was
        trainer.load_checkpoint(out)
        log.info("resuming %s at step %d", out, trainer.step)
    parallel.barrier()
    if parallel.is_main:
        write_run_files(out, config, data.tokenizer, model.config.block_size)
    parallel.barrier()
    if load_tokenizer(out / "tokenizer.json") != data.tokenizer:
        raise CheckpointError(f"{out}: this rank fitted a different tokenizer from rank 0's")

    interrupted = []

    def on_signal(signum, _frame):
        if interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted.append(signum)
        trainer.interrupt()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.fit()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if trainer.nonfinite_steps:
        print(f"warning: {trainer.nonfinite_steps} step(s) with a non-finite loss or gradient were skipped",
              file=sys.stderr)
    if interrupted:
        print(f"interrupted at step {trainer.step}; checkpoint saved. Resume with: lmlab train --out {out} --resume",
              file=sys.stderr)
        return 130
    if not parallel.is_main:
        if parallel.mode == "fsdp" and parallel.world_size > 1:
            _split_nll(config, data, trainer)  # FSDP's forward is collective: take part in rank 0's evaluation
        return 0

    summary = _write_summary(out, config, data, trainer)
    nll = summary["nll"]
    print(f"{config.model_name}: train {nll['train']:.4f}  val {_f(nll.get('val'))}  test {_f(nll.get('test'))} "
          f"nats/token after {trainer.step} steps ({summary['train_seconds']:.0f} s)")
    from lmlab.sample import SampleOptions, sample_texts
    from lmlab.train.run import load_run

    samples = sample_texts(load_run(out), SampleOptions(num_samples=10 if data.mode == "lines" else 1))
    print("samples:")
    for text in samples:
        print(f"  {text}")
    print(f"run directory: {out}")
    return 0


def _write_summary(out: Path, config, data, trainer) -> dict[str, Any]:
    from lmlab.train.checkpoint import atomic_write_text

    nll = _split_nll(config, data, trainer)
    summary = {
        "model": config.model_name,
        "parameters": count_parameters(trainer.model),
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 3),
        "tokens_per_s": round(trainer.tokens_seen / max(trainer.train_seconds, 1e-9)),
        "nonfinite_steps": trainer.nonfinite_steps,
        "nll": nll,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _split_nll(config, data, trainer) -> dict[str, float]:
    from lmlab.train.evaluation import mean_nll

    nll = {}
    for split, dataset in data.splits.items():
        if len(dataset):
            nll[split], _ = mean_nll(trainer.model, dataset, device=trainer.device,
                                     max_tokens=config.train.eval_max_tokens)
    return nll


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# ----------------------------------------------------------------------------------------------------------
# eval, sample


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


# ----------------------------------------------------------------------------------------------------------
# export, import (the HF transformers GPT-2 format)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a trained GPT run in the HF transformers format (config.json, model.safetensors, tokenizer)."""
    from lmlab.export import export_hf
    from lmlab.train.run import load_run

    out = export_hf(load_run(args.run), args.out)
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          "and AutoTokenizer.from_pretrained")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Turn a local HF GPT-2 directory into an lmlab run that samples, evaluates and fine-tunes (--resume)."""
    from lmlab.export import import_hf

    data = {k: v for k, v in {"source": args.data, "mode": args.mode}.items() if v is not None}
    run = import_hf(args.hf_dir, args.out, data)
    print(f"{run.run_dir}: GPT, {count_parameters(run.model):,} parameters, vocab {run.tokenizer.vocab_size}, "
          f"context {run.model.config.block_size}. Sample: lmlab sample {run.run_dir}; fine-tune on "
          f"{run.config.data.source}: lmlab train --out {run.run_dir} --resume --max-steps N")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--format", choices=["hf"], default="hf", help="hf: transformers GPT-2 (default)")
    p.add_argument("out", metavar="OUT", help="directory to write")


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_dir", metavar="HF_DIR", help="a local GPT-2 directory (config.json, model.safetensors, "
                   "tokenizer.json)")
    p.add_argument("--out", required=True, metavar="RUN", help="the run directory to create")
    p.add_argument("--data", metavar="SRC", help="the data eval and fine-tuning use (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="lines or stream (default: the data set's own)")


# ----------------------------------------------------------------------------------------------------------
# compare, ladder


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


def cmd_ladder(args: argparse.Namespace) -> int:
    """Train every rung (counted bigram to the largest model) on one data set, each within a time budget,
    then write the comparison table and validation curves into one folder."""
    from lmlab.compare import format_table
    from lmlab.ladder import JSON_FILE, PLOT_FILE, TABLE_FILE, run_ladder

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    out = Path(args.out)

    def on_rung_end(name: str, summary: dict[str, Any]) -> None:
        nll = summary["nll"]
        print(f"{name}: val {_f(nll.get('val'))}  test {_f(nll.get('test'))} after {summary['steps']} steps "
              f"({summary['train_seconds']:.0f} s)", file=sys.stderr, flush=True)

    rows = run_ladder(args.data, out, budget=args.budget, models=models, mode=args.mode, seed=args.seed,
                      device=args.device, force=args.force, fit_schedule=not args.keep_steps,
                      on_rung_end=on_rung_end)
    print(format_table(rows), end="")
    print(f"table: {out / TABLE_FILE}, {out / JSON_FILE}; plot: {out / PLOT_FILE}")
    return 0
# ----------------------------------------------------------------------------------------------------------
# data prepare


def cmd_data(args: argparse.Namespace) -> int:
    """Prepare data: `lmlab data prepare SRC --tokenizer bpe --out DIR` tokenizes once into memory-mapped
    shards; `lmlab train --data DIR` then trains on them with memory that stays flat as the corpus grows."""
    from lmlab.train.prepare import PrepareOptions, prepare_shards

    meta = prepare_shards(PrepareOptions(
        source=args.source, out=args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size or 0,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, encoding=args.encoding))
    splits = ", ".join(f"{name} {s['tokens']:,}" for name, s in meta["splits"].items())
    print(f"{args.out}: {meta['tokenizer']} tokenizer, vocab {meta['vocab_size']:,}, {meta['dtype']}; tokens: "
          f"{splits}; {meta['megabytes']:.1f} MB encoded at {meta['encode_mb_per_s']:.1f} MB/s "
          f"(tokenizer fit {meta['fit_seconds']:.1f} s)")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    doc = "Tokenize SRC once into DIR: train/val/test .bin shards (uint16/uint32), meta.json, tokenizer.json."
    q = sub.add_parser("prepare", help=doc, description=doc)
    q.add_argument("source", metavar="SRC", help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder")
    q.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char", help="(default: char)")
    q.add_argument("--vocab-size", type=int, metavar="N", help="word/bpe vocabulary size (default 8192 / 1024)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    q.add_argument("--val-fraction", type=float, default=0.1, help="(default: 0.1)")
    q.add_argument("--test-fraction", type=float, default=0.1, help="(default: 0.1)")
    q.add_argument("--encoding", default="utf-8", help="text encoding of the source files (default: utf-8)")


# ----------------------------------------------------------------------------------------------------------
# forecast, classify: plain nn.Modules on the same Trainer


def _model_train_values(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model values, train values) from --set model.*/train.* and the named training options."""
    overrides = parse_set_args(args.set)
    unknown = sorted(set(overrides) - {"model", "train"})
    if unknown:
        raise ConfigError(f"--set: {args.command} takes model.* and train.* keys, got {unknown[0]}.*")
    train = dict(overrides.get("train", {}))
    train.update({k: getattr(args, k) for k in ("max_steps", "seed", "device") if getattr(args, k) is not None})
    return overrides.get("model", {}), train


def cmd_forecast(args: argparse.Namespace) -> int:
    """Train a forecaster on a 1-D series and print its MAE and MSE beside every baseline; writes a PNG of
    forecast against actual. --data synthetic (the course's seeded series) or FILE.csv:COLUMN."""
    from lmlab.series.forecast import run_forecast

    model_values, train_values = _model_train_values(args)
    stem = "synthetic" if args.data == "synthetic" else Path(args.data.rpartition(":")[0]).stem
    out = Path(args.out) if args.out else _default_out(f"forecast-{args.model}", stem)
    result = run_forecast(args.data, args.model, window=args.window, out=out, split=args.split_time,
                          period=args.period, shuffle_buffer=args.shuffle_buffer, model_values=model_values,
                          train_values=train_values)
    width = max(len(name) for name in result.scores)
    print(f"forecast of {len(result.actual)} validation steps (from step {result.split}), "
          f"{args.model} trained {result.steps} steps, window {args.window}")
    print(f"  {'':<{width}}  {'MAE':>9}  {'MSE':>10}")
    for name, score in result.scores.items():
        print(f"  {name:<{width}}  {score['mae']:>9.3f}  {score['mse']:>10.3f}")
    print(f"plot: {result.plot}\nrun directory: {out}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Train a small conv classifier on images and print its validation accuracy; writes feature maps of
    each conv layer at every evaluation and an HTML page to watch them. --data digits or a FOLDER with one
    subfolder per class."""
    from lmlab.vision.classify import run_classify

    model_values, train_values = _model_train_values(args)
    out = Path(args.out) if args.out else _default_out("classify", Path(args.data).name)
    result = run_classify(args.data, out=out, image_size=args.image_size, grayscale=args.grayscale,
                          val_fraction=args.val_fraction, model_values=model_values, train_values=train_values)
    print(f"convnet: validation accuracy {result.accuracy:.4f} ({result.num_val} images, {len(result.class_names)} "
          f"classes; chance {result.chance:.4f}), train accuracy {result.train_accuracy:.4f} after "
          f"{result.steps} steps")
    print(f"feature maps: {result.report}\nrun directory: {out}")
    return 0


def _run_args(p: argparse.ArgumentParser, out_default: str, set_example: str) -> None:
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps to train for")
    p.add_argument("--seed", type=int, help="seed for the split, init and batches (default: 1337)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    p.add_argument("--out", metavar="DIR", help=f"run directory (default: {out_default})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override model.* or train.* values, e.g. {set_example}")


def _forecast_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic", metavar="SRC", help="synthetic (default) or FILE.csv:COLUMN")
    p.add_argument("--model", default="linear", choices=["linear", "mlp", "conv_lstm"], help="default: linear")
    p.add_argument("--window", type=int, default=20, metavar="N", help="past values per forecast (default: 20)")
    p.add_argument("--split-time", type=int, metavar="T", help="first validation step (default: synthetic 1000, "
                   "else 70%% of the series rounded down to whole periods)")
    p.add_argument("--period", type=int, metavar="P", help="season length for the split and the seasonal "
                   "baselines (default: synthetic 365, else none)")
    p.add_argument("--shuffle-buffer", type=int, default=1000, metavar="N", help="windows in the shuffle buffer")
    _run_args(p, "runs/forecast-MODEL-DATA", "--set train.lr=1e-3 --set model.n_hidden=32")


def _classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", metavar="SRC", help="digits (scikit-learn's 8x8 digits, needs "
                   "lmlab[vision]; default) or a FOLDER with one subfolder of images per class")
    p.add_argument("--image-size", type=int, default=64, metavar="N", help="folder images are resized to NxN")
    p.add_argument("--grayscale", action="store_true", help="read folder images as one grey channel")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F", help="held out for validation")
    _run_args(p, "runs/classify-DATA", "--set model.n_filters=8 --set train.lr=1e-3")


# ----------------------------------------------------------------------------------------------------------
# The table of subcommands


def _train_args(p: argparse.ArgumentParser) -> None:
    _add_data_model_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/MODEL-DATA, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="which split (default: val)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _sample_args(p: argparse.ArgumentParser) -> None:
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


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (with the validation curves)")
    p.add_argument("--plot", metavar="FILE.png", default="val_curves.png",
                   help="where to write the validation curves (default: val_curves.png; '' for none)")


def _ladder_rungs() -> list[str]:
    from lmlab.ladder import default_rungs

    return default_rungs()


def _ladder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="SRC", default="names",
                   help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="one example per line, or one long stream")
    p.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                   help="training time per rung (default: 60)")
    p.add_argument("--out", metavar="DIR", default="runs/ladder", help="folder for the runs, table and plot "
                   "(default: runs/ladder)")
    p.add_argument("--models", metavar="A,B,...", help="rungs to train (default: one per architecture: "
                   f"{', '.join(_ladder_rungs())})")
    p.add_argument("--seed", type=int, default=1337, help="seed for every rung (default: 1337)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    p.add_argument("--force", action="store_true", help="overwrite runs already in --out")
    p.add_argument("--keep-steps", action="store_true", help="keep each rung's registered max_steps even when "
                   "the budget cuts training off before its schedule ends")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "train": (cmd_train, _train_args),
    "eval": (cmd_eval, _eval_args),
    "sample": (cmd_sample, _sample_args),
    "export": (cmd_export, _export_args),
    "import": (cmd_import, _import_args),
    "compare": (cmd_compare, _compare_args),
    "ladder": (cmd_ladder, _ladder_args),
    "data": (cmd_data, _data_args),
    "forecast": (cmd_forecast, _forecast_args),
    "classify": (cmd_classify, _classify_args),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmlab", description="Train, look inside, compare and sample language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (func, add_args) in COMMANDS.items():
        doc = (func.__doc__ or "").strip()
        add_args(sub.add_parser(name, help=doc.splitlines()[0], description=doc))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command][0](args)
    except LmlabError as err:
        print(f"lmlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
