"""Subcommands beyond next-token text models: data prepare, forecast, classify."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmlab.cli.common import Parser
from lmlab.config import parse_set_args
from lmlab.data.sources import EMBEDDED
from lmlab.errors import ConfigError
from lmlab.names import did_you_mean

# Each command imports its task's code (torch) when it runs, so that `--help` starts at once.


def cmd_data(args: argparse.Namespace) -> int:
    """Prepare data: `lmlab data prepare SRC --tokenizer bpe --out DIR` tokenizes once into memory-mapped
    shards; `lmlab train --data DIR` then trains on them with memory that stays flat as the corpus grows."""
    from lmlab.data.shard_writer import PrepareOptions, prepare_shards

    meta = prepare_shards(PrepareOptions(
        source=args.source, out=args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size or 0,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, encoding=args.encoding,
        show_progress=True))
    splits = ", ".join(f"{name} {s['tokens']:,}" for name, s in meta["splits"].items())
    print(f"{args.out}: {meta['tokenizer']} tokenizer, vocab {meta['vocab_size']:,}, {meta['dtype']}; tokens: "
          f"{splits}; {meta['megabytes']:.1f} MB encoded at {meta['encode_mb_per_s']:.1f} MB/s "
          f"(tokenizer fit {meta['fit_seconds']:.1f} s)")
    return 0


def data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    doc = "Tokenize SRC once into DIR: train/val/test .bin shards (uint16/uint32), meta.json, tokenizer.json."
    q = sub.add_parser("prepare", help=doc, description=doc)
    q.add_argument("source", metavar="SRC", help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder")
    q.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char", help="(default: char)")
    q.add_argument("--vocab-size", type=int, metavar="N", help="word/bpe vocabulary size (default 8192 / 1024)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    q.add_argument("--val-fraction", type=float, default=0.1, help="(default: 0.1)")
    q.add_argument("--test-fraction", type=float, default=0.1, help="(default: 0.1)")
    q.add_argument("--encoding", default="utf-8", help="text encoding of the source files (default: utf-8)")


def _model_train_values(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model values, train values) from --set model.*/train.* and the named training options."""
    overrides = parse_set_args(args.set)
    unknown = sorted(set(overrides) - {"model", "train"})
    if unknown:
        raise ConfigError(f"--set: {args.command} takes model.* and train.* keys, got {unknown[0]}.*; "
                          f"{did_you_mean(unknown[0], ('model', 'train'))}".rstrip("; "))
    train = dict(overrides.get("train", {}))
    train.update({k: getattr(args, k) for k in ("max_steps", "seed", "device") if getattr(args, k) is not None})
    return overrides.get("model", {}), train


def cmd_forecast(args: argparse.Namespace) -> int:
    """Train a forecaster on a 1-D series and print its MAE and MSE beside every baseline; writes a PNG of
    forecast against actual. --data synthetic (the course's seeded series) or FILE.csv:COLUMN."""
    from lmlab.run.folder import default_run_dir
    from lmlab.series.forecast import run_forecast

    model_values, train_values = _model_train_values(args)
    stem = "synthetic" if args.data == "synthetic" else Path(args.data.rpartition(":")[0]).stem
    out = Path(args.out) if args.out else default_run_dir(f"forecast-{args.model}", stem)
    result = run_forecast(args.data, args.model, window=args.window, out=out, split=args.split_time,
                          period=args.period, shuffle_buffer=args.shuffle_buffer, model_values=model_values,
                          train_values=train_values, difference=args.difference, smooth=args.smooth,
                          horizon=args.horizon, patience=args.patience, delimiter=args.delimiter)
    width = max(len(name) for name in result.scores)
    how = []
    if result.difference:
        how.append(f"on the series differenced at period {result.difference.period} (previous period "
                   f"smoothed over {result.difference.smooth})")
    how.append(f"lr {result.lr:.3g}" + (" (range test)" if result.lr_found else ""))
    if result.best_step is not None:
        how.append(f"best validation at step {result.best_step}")
    print(f"forecast of {len(result.actual)} validation steps (from step {result.split}), "
          f"{args.model} trained {result.steps} steps, window {args.window}")
    print("  " + "; ".join(how))
    print(f"  {'':<{width}}  {'MAE':>9}  {'MSE':>10}")
    for name, score in result.scores.items():
        print(f"  {name:<{width}}  {score['mae']:>9.3f}  {score['mse']:>10.3f}")
    if result.future is not None:
        shown = ", ".join(f"{v:.3f}" for v in result.future[:10]) + (", ..." if len(result.future) > 10 else "")
        print(f"next {len(result.future)} steps: {shown}")
    print(f"plot: {result.plot}\nrun directory: {out}")
    return 0


def forecast_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic", metavar="SRC", help="synthetic (default) or FILE.csv:COLUMN")
    p.add_argument("--model", default="linear", choices=["linear", "mlp", "conv_lstm"], help="default: linear")
    p.add_argument("--window", type=int, default=20, metavar="N", help="past values per forecast (default: 20)")
    p.add_argument("--split-time", type=int, metavar="T", help="first validation step (default: synthetic 1000, "
                   "else 70%% of the series rounded down to whole periods)")
    p.add_argument("--period", type=int, metavar="P", help="season length for the split, the seasonal "
                   "baselines and --difference auto (default: synthetic 365, else the one the training part's "
                   "autocorrelation shows, if any)")
    p.add_argument("--shuffle-buffer", type=int, default=1000, metavar="N", help="windows in the shuffle buffer")
    p.add_argument("--delimiter", metavar="CHAR", help="the CSV file's field separator (default: detected among "
                   "',', ';', tab and '|')")
    p.add_argument("--difference", default="auto", metavar="PERIOD", help="forecast the change since one period "
                   "ago and add the previous period back: a period, 'none', or 'auto' (default: --period, else "
                   "the season the training part's autocorrelation shows, else none)")
    p.add_argument("--smooth", type=int, metavar="K", help="values averaged around one period ago when adding "
                   "it back (default: 10, at most a quarter period)")
    p.add_argument("--horizon", type=int, default=0, metavar="H", help="also forecast H steps beyond the data, "
                   "each forecast feeding the next (default: 0)")
    p.add_argument("--patience", type=int, default=5, metavar="N", help="stop after N evaluations without a "
                   "better validation loss and keep the best weights; 0: off (default: 5). Without "
                   "--set train.lr=..., a learning-rate range test picks the rate")
    run_args(p, "runs/forecast-MODEL-DATA", "--set train.lr=1e-3 --set model.n_hidden=32")


def cmd_classify(args: argparse.Namespace) -> int:
    """Train a small conv classifier on images and print its validation accuracy; writes feature maps of
    each conv layer at every evaluation and an HTML page to watch them. --data digits or a FOLDER with one
    subfolder per class."""
    from lmlab.inspector import format_finding
    from lmlab.run.folder import default_run_dir
    from lmlab.vision.classify import run_classify

    model_values, train_values = _model_train_values(args)
    out = Path(args.out) if args.out else default_run_dir("classify", Path(args.data).name)
    result = run_classify(args.data, out=out, image_size=args.image_size, grayscale=args.grayscale,
                          val_fraction=args.val_fraction, model_values=model_values, train_values=train_values,
                          augment=args.augment, patience=args.patience)
    best = f", best validation at step {result.best_step}" if result.best_step is not None else ""
    print(f"convnet: validation accuracy {result.accuracy:.4f} ({result.num_val} images, {len(result.class_names)} "
          f"classes; chance {result.chance:.4f}), train accuracy {result.train_accuracy:.4f} after "
          f"{result.steps} steps (augment: {result.augment}{best})")
    if result.findings:

        for finding in result.findings:
            print(format_finding(finding))
    print(f"feature maps: {result.report}\nrun directory: {out}")
    return 0


def classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", metavar="SRC", help="digits (scikit-learn's 8x8 digits, needs "
                   "lmlab[vision]; default) or a FOLDER with one subfolder of images per class")
    p.add_argument("--image-size", type=int, default=64, metavar="N", help="folder images are resized to NxN")
    p.add_argument("--grayscale", action="store_true", help="read folder images as one grey channel")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F", help="held out for validation")
    p.add_argument("--augment", default="auto", metavar="LIST", help="what training batches go through: "
                   "crop,flip,rotate (any of them), none, or auto (default: all three; none for digits)")
    p.add_argument("--patience", type=int, default=5, metavar="N", help="stop after N evaluations without a "
                   "better validation loss and keep the best weights; 0: off (default: 5)")
    run_args(p, "runs/classify-DATA", "--set model.n_filters=8 --set train.lr=1e-3")


def run_args(p: argparse.ArgumentParser, out_default: str, set_example: str) -> None:
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps to train for")
    p.add_argument("--seed", type=int, help="seed for the split, init and batches (default: 1337)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    p.add_argument("--out", metavar="DIR", help=f"run directory (default: {out_default})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override model.* or train.* values, e.g. {set_example}")
