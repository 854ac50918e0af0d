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
             "summary.json", "findings.json", "report.html", "inspect.json")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback-like noise
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------------------------------------
# train


def _add_data_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="SRC", help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder "
                   "(default: names)")
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
    """Train a model and print samples. Plain `lmlab train` trains the default model on the embedded names."""
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
        if (out / "config.json").exists():
            if not args.force:
                raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or --force to "
                                      "start over")
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)

    from lmlab.tokenizers import load_tokenizer
    from lmlab.train.run import build_model, write_run_files

    tokenizer = load_tokenizer(out / "tokenizer.json") if args.resume else None
    data = prepare_data(config.data, tokenizer)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, mode=data.mode))
    block_size = max(ds.block_size for ds in data.splits.values())
    model = build_model(config, data.tokenizer, block_size)
    log.info("%s: %s parameters; data %s (%s mode, vocab %d, %s train tokens) -> %s", config.model_name,
             f"{count_parameters(model):,}", config.data.source, data.mode, data.tokenizer.vocab_size,
             f"{data.splits['train'].num_predictions:,}", out)
    return _fit_and_report(config, data, model, out, args.resume, _train_callbacks(args))


def _train_callbacks(args: argparse.Namespace) -> list:
    """The callbacks chosen on the command line; the inspector is on unless --no-inspect."""
    from lmlab.train import callbacks as cb

    chosen: list = []
    if args.inspect_every is not None and args.inspect_every < 1:
        raise ConfigError(f"--inspect-every must be at least 1, got {args.inspect_every}")
    if not args.no_inspect:
        from lmlab.inspect import Inspector

        chosen.append(Inspector(every=args.inspect_every))
    if args.early_stopping is not None:
        chosen.append(cb.EarlyStopping(patience=args.early_stopping, restore_best_weights=True))
    if args.reduce_lr_on_plateau is not None:
        chosen.append(cb.ReduceLROnPlateau(patience=args.reduce_lr_on_plateau))
    if args.save_top_k is not None:
        chosen.append(cb.ModelCheckpoint(save_top_k=args.save_top_k, save_last=True))
    return chosen


def _print_findings(findings: list[dict[str, Any]] | None, out: Path) -> None:
    from lmlab.inspect import format_finding

    if findings is not None:
        print("\n".join(format_finding(f) for f in findings) if findings else "inspector: no problems found")
        print(f"report: {out / 'report.html'}")


def _fit_and_report(config, data, model, out: Path, resume: bool, callbacks=()) -> int:
    from lmlab.inspect.report import write_inspection
    from lmlab.train.run import write_run_files
    from lmlab.train.trainer import Trainer, TrainingDiverged

    write_run_files(out, config, data.tokenizer, model.config.block_size)
    trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=out,
                      callbacks=callbacks)
    if resume:
        trainer.load_checkpoint(out)
        log.info("resuming %s at step %d", out, trainer.step)

    interrupted = []

    def on_signal(signum, _frame):
        if interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted.append(signum)
        trainer.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.fit()
    except TrainingDiverged:
        _print_findings(write_inspection(out, trainer), out)  # what went wrong, before the one-line error
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if interrupted:
        print(f"interrupted at step {trainer.step}; checkpoint saved. Resume with: lmlab train --out {out} --resume",
              file=sys.stderr)
        return 130

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
    _print_findings(write_inspection(out, trainer), out)
    print(f"run directory: {out}")
    return 0


def _write_summary(out: Path, config, data, trainer) -> dict[str, Any]:
    from lmlab.train.checkpoint import atomic_write_text
    from lmlab.train.evaluation import mean_nll

    nll = {}
    for split, dataset in data.splits.items():
        if len(dataset):
            nll[split], _ = mean_nll(trainer.model, dataset, device=trainer.device,
                                     max_tokens=config.train.eval_max_tokens)
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

    options = SampleOptions(num_samples=args.n, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    run = load_run(args.run)
    try:
        run.tokenizer(args.prompt)
    except LmlabError as err:
        raise type(err)(f"--prompt: {err}") from None
    stream = args.n == 1 and not args.json and sys.stdout.isatty()
    on_token = (lambda text: print(text, end="", flush=True)) if stream else None  # noqa: E731
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
# inspect, lr-find


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show a run's health findings again (and rebuild report.html with --report)."""
    from lmlab.inspect import format_finding
    from lmlab.inspect.report import reinspect

    findings = reinspect(Path(args.run), rebuild_report=args.report)
    print(json.dumps(findings, indent=2) if args.json else
          "\n".join(format_finding(f) for f in findings) if findings else "no problems found")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    """Learning-rate range test: sweep 1e-7 -> 10 exponentially on a copy of the model, plot loss vs LR and
    suggest a learning rate (valley rule by default)."""
    from lmlab.train.lr_finder import lr_find
    from lmlab.train.run import build_model, layered_config, prepare_data, resolve_config

    config = resolve_config(layered_config(*_cli_layers(args)))
    data = prepare_data(config.data)
    model = build_model(config, data.tokenizer, max(ds.block_size for ds in data.splits.values()))
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model {config.model_name!r} is counted, not trained by gradient steps: no LR to find")
    if not 0 < args.start_lr < args.end_lr or args.num_iter < 3:
        raise ConfigError("need 0 < --start-lr < --end-lr and --num-iter of at least 3")
    result = lr_find(model, data.splits["train"], config.train, start_lr=args.start_lr, end_lr=args.end_lr,
                     num_iter=args.num_iter, rule=args.rule)
    plot = result.plot(args.plot)
    if result.suggestion is None:
        raise ConfigError("the loss diverged at once; try a lower --start-lr")
    if args.json:
        print(json.dumps({"suggestion": result.suggestion, "rule": result.rule, "plot": str(plot),
                          "lrs": result.lrs, "losses": result.losses}))
        return 0
    print(f"suggested learning rate: {result.suggestion:.2e} ({result.rule} rule, {len(result.lrs)} steps "
          f"from {args.start_lr:g} to {result.lrs[-1]:.3g}); try --set train.lr={result.suggestion:.2g}")
    print(f"plot: {plot}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# The table of subcommands


def _train_args(p: argparse.ArgumentParser) -> None:
    _add_data_model_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/MODEL-DATA, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--inspect-every", type=int, metavar="K", help="inspector: sample layer statistics every K "
                   "steps (default: about 50 samples per run, at most every 100 steps)")
    p.add_argument("--no-inspect", action="store_true", help="turn the inspector, findings and report off")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop when val loss has not improved "
                   "for PATIENCE evaluations, keeping the best weights")
    p.add_argument("--reduce-lr-on-plateau", type=int, metavar="PATIENCE", help="scale the learning rate by 0.1 "
                   "when val loss has not improved for PATIENCE evaluations")
    p.add_argument("--save-top-k", type=int, metavar="K", help="keep the K best weight files by val loss (and "
                   "the last) in RUN/checkpoints")


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
    p.add_argument("--max-new-tokens", type=int, default=0,
                   help="tokens to generate (default: to the end of the line, or 500 in stream mode)")
    p.add_argument("--seed", type=int, default=42, help="seed that makes sampling reproducible (default: 42)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--report", action="store_true", help="rebuild RUN/report.html")


def _lr_find_args(p: argparse.ArgumentParser) -> None:
    _add_data_model_args(p)
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default: 10)")
    p.add_argument("--num-iter", type=int, default=100, help="steps in the sweep (default: 100)")
    p.add_argument("--rule", choices=["valley", "minimum", "steep"], default="valley",
                   help="how to pick the suggestion (default: valley, as fastai)")
    p.add_argument("--plot", default="lr_find.png", metavar="PNG", help="where to save the plot (default: "
                   "lr_find.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "train": (cmd_train, _train_args),
    "eval": (cmd_eval, _eval_args),
    "sample": (cmd_sample, _sample_args),
    "inspect": (cmd_inspect, _inspect_args),
    "lr-find": (cmd_lr_find, _lr_find_args),
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
