"""`lmlab train` and `lmlab lr-find`: build a run from the config layers, fit it, report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from lmlab.cli.common import add_data_model_args, cli_layers, default_out, fmt, log
from lmlab.errors import CheckpointError, ConfigError
from lmlab.models import count_parameters

RUN_FILES = ("config.json", "tokenizer.json", "model.safetensors", "trainer_state.pt", "metrics.jsonl",
             "summary.json", "findings.json", "report.html", "inspect.json")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model and print samples. Plain `lmlab train` trains the default model on the embedded names.
    Under `torchrun --nproc_per_node N -m lmlab train ...` it trains on N processes (DDP, or FSDP2 with
    --set train.parallel=fsdp); rank 0 alone logs and writes the run directory."""
    from lmlab.training.distributed import Parallel, launched_by_torchrun

    if not launched_by_torchrun():
        return _train(args, Parallel())
    parallel = Parallel()
    try:
        from lmlab.training.run import layered_config, resolve_config

        train = resolve_config(layered_config(*cli_layers(args))).train
        parallel = Parallel.from_environment(train.device, train.parallel)
        if not parallel.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        return _train(args, parallel)
    finally:
        parallel.close()


def _train(args: argparse.Namespace, parallel) -> int:
    from lmlab.training.run import layered_config, load_run_config, prepare_data, resolve_config

    layers = cli_layers(args)
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        saved, _ = load_run_config(out)
        if args.model and args.model != saved.model_name:
            raise CheckpointError(f"{out} is a {saved.model_name} run; --resume continues the run's own data and "
                                  "model; change only train.*")
        config = resolve_config(layered_config(saved.to_dict(), *layers))
        if config.data != saved.data or config.model != saved.model or config.model_name != saved.model_name:
            raise CheckpointError(f"{out}: --resume continues the run's own data and model; change only train.*")
    else:
        config = resolve_config(layered_config(*layers))
        out = out or default_out(config.model_name, config.data.source)
        if (out / "config.json").exists() and not args.force:
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or --force to "
                                  "start over")

    from lmlab.tokenizers import load_tokenizer
    from lmlab.training.run import build_model, resolved_data_config

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
    return _fit_and_report(config, data, model, out, args.resume, parallel, _train_callbacks(args, parallel))


def _train_callbacks(args: argparse.Namespace, parallel=None) -> list:
    """The callbacks chosen on the command line; the inspector is on unless --no-inspect. Under torchrun,
    callbacks that write files run on rank 0 only; the inspector is off with FSDP (its statistics would
    read sharded tensors on one rank)."""
    from lmlab.training import callbacks as cb

    main = parallel is None or parallel.is_main
    chosen: list = []
    if args.inspect_every is not None and args.inspect_every < 1:
        raise ConfigError(f"--inspect-every must be at least 1, got {args.inspect_every}")
    fsdp = parallel is not None and parallel.mode == "fsdp" and parallel.world_size > 1
    # Other ranks hold a do-nothing placeholder, so callback states line up with rank 0's on resume.
    if not args.no_inspect and not fsdp:
        from lmlab.inspector import Inspector

        chosen.append(Inspector(every=args.inspect_every) if main else cb.Callback())
    if args.early_stopping is not None:
        chosen.append(cb.EarlyStopping(patience=args.early_stopping, restore_best_weights=True))
    if args.reduce_lr_on_plateau is not None:
        chosen.append(cb.ReduceLROnPlateau(patience=args.reduce_lr_on_plateau))
    if args.save_top_k is not None:
        chosen.append(cb.ModelCheckpoint(save_top_k=args.save_top_k, save_last=True) if main else cb.Callback())
    return chosen


def _print_findings(findings: list[dict[str, Any]] | None, out: Path) -> None:
    from lmlab.inspector import format_finding

    if findings is not None:
        print("\n".join(format_finding(f) for f in findings) if findings else "inspector: no problems found")
        print(f"report: {out / 'report.html'}")


def _fit_and_report(config, data, model, out: Path, resume: bool, parallel=None, callbacks=()) -> int:
    from lmlab.inspector.report import write_inspection
    from lmlab.tokenizers import load_tokenizer
    from lmlab.training.distributed import Parallel
    from lmlab.training.run import split_nll, write_run_files, write_summary
    from lmlab.training.trainer import Trainer, TrainingDiverged

    parallel = parallel or Parallel()
    trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=out,
                      parallel=parallel, callbacks=callbacks)
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
    except TrainingDiverged:
        _print_findings(write_inspection(out, trainer), out)  # what went wrong, before the one-line error
        raise
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
            split_nll(trainer, data.splits)  # FSDP's forward is collective: take part in rank 0's evaluation
        return 0

    summary = write_summary(out, config.model_name, data.splits, trainer)
    nll = summary["nll"]
    print(f"{config.model_name}: train {nll['train']:.4f}  val {fmt(nll.get('val'))}  test {fmt(nll.get('test'))} "
          f"nats/token after {trainer.step} steps ({summary['train_seconds']:.0f} s)")
    from lmlab.sample import SampleOptions, sample_texts
    from lmlab.training.run import load_run

    samples = sample_texts(load_run(out), SampleOptions(num_samples=10 if data.mode == "lines" else 1))
    print("samples:")
    for text in samples:
        print(f"  {text}")
    _print_findings(write_inspection(out, trainer), out)
    print(f"run directory: {out}")
    return 0


def train_args(p: argparse.ArgumentParser) -> None:
    add_data_model_args(p)
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


def cmd_lr_find(args: argparse.Namespace) -> int:
    """Learning-rate range test: sweep 1e-7 -> 10 exponentially on a copy of the model, plot loss vs LR and
    suggest a learning rate (valley rule by default)."""
    from lmlab.training.lr_finder import lr_find
    from lmlab.training.run import build_model, layered_config, prepare_data, resolve_config

    config = resolve_config(layered_config(*cli_layers(args)))
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


def lr_find_args(p: argparse.ArgumentParser) -> None:
    add_data_model_args(p)
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default: 10)")
    p.add_argument("--num-iter", type=int, default=100, help="steps in the sweep (default: 100)")
    p.add_argument("--rule", choices=["valley", "minimum", "steep"], default="valley",
                   help="how to pick the suggestion (default: valley, as fastai)")
    p.add_argument("--plot", default="runs/lr_find.png", metavar="PNG", help="where to save the plot (default: "
                   "runs/lr_find.png, beside the runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
