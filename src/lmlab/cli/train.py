"""`lmlab train` and `lmlab lr-find`: parse the options, call the pipeline (lmlab.run.train), print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lmlab import run as lmlab_run
from lmlab.cli.common import add_data_model_args, cli_layers, default_out, fmt
from lmlab.errors import ConfigError
from lmlab.inspector import Inspector, format_finding, is_problem
from lmlab.training import callbacks as cb
from lmlab.training.budget import train_longer_hint
from lmlab.training.distributed import Parallel, launched_by_torchrun
from lmlab.run.fit_defaults import fit_to_data
from lmlab.training.lr_finder import lr_find
from lmlab.training.performance import use_fitting_threads
from lmlab.run.config import merge_layers, resolve_config
from lmlab.run.data import context_length, prepare_data
from lmlab.run.folder import FINDINGS_FILE, REPORT_FILE, RunDir
from lmlab.training.trainer import TrainingDiverged


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model and print samples. Plain `lmlab train` trains the default model on the embedded names.
    Under `torchrun --nproc_per_node N -m lmlab train ...` it trains on N processes (DDP, or FSDP2 with
    --set train.parallel=fsdp); rank 0 alone logs and writes the run directory."""
    layers = merge_layers(*cli_layers(args))
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
    if args.inspect_every is not None and args.inspect_every < 1:
        raise ConfigError(f"--inspect-every must be at least 1, got {args.inspect_every}")
    parallel = Parallel()
    try:
        if launched_by_torchrun():
            train = resolve_config(layers).train if not args.resume else \
                resolve_config(merge_layers(RunDir(args.out).read_config()[0].to_dict(), layers)).train
            parallel = Parallel.from_environment(train.device, train.parallel)
            if not parallel.is_main:
                logging.getLogger().setLevel(logging.WARNING)
        if not args.out:
            config = resolve_config(layers)
            args.out = default_out(config.model_name, config.data.source)
        inspect = False if args.no_inspect else (args.inspect_every or True)
        try:
            run = lmlab_run.train(layers, out=args.out, resume=args.resume, force=args.force, inspect=inspect,
                                  callbacks=_train_callbacks(args, parallel), parallel=parallel)
        except TrainingDiverged:  # what the inspector saw, before the one-line error
            findings = Path(args.out) / FINDINGS_FILE
            if parallel.is_main and findings.is_file():
                print("\n".join(format_finding(f) for f in RunDir(args.out).read_json(FINDINGS_FILE, "findings", list)))
            raise
    finally:
        parallel.close()
    return _report(run, parallel)


def _train_callbacks(args: argparse.Namespace, parallel: Parallel) -> list:
    """The callbacks chosen on the command line. Under torchrun, the ones that write files run on rank 0."""
    chosen: list = []
    if args.reduce_lr_on_plateau is not None:
        chosen.append(cb.ReduceLROnPlateau(patience=args.reduce_lr_on_plateau))
    if args.save_top_k is not None and parallel.is_main:
        chosen.append(cb.ModelCheckpoint(save_top_k=args.save_top_k, save_last=True))
    return chosen


def _report(run: lmlab_run.Run, parallel: Parallel) -> int:
    """What `lmlab train` prints when training ends: losses, samples, findings, where the run is."""
    trainer = run.trainer
    if trainer.nonfinite_steps:
        print(f"warning: {trainer.nonfinite_steps} step(s) with a non-finite loss or gradient were skipped",
              file=sys.stderr)
    if run.interrupted:
        print(f"interrupted at step {trainer.step}; checkpoint saved. Resume with: lmlab train --out "
              f"{run.run_dir} --resume", file=sys.stderr)
        return 130
    if not parallel.is_main:
        return 0
    summary = run.summary
    nll = summary["nll"]
    print(f"{run.config.model_name}: train {nll['train']:.4f}  val {fmt(nll.get('val'))}  test "
          f"{fmt(nll.get('test'))} nats/token after {trainer.step} steps ({summary['train_seconds']:.0f} s)")
    print("samples:")
    for text in run.sample(n=10 if run.config.data.mode == "lines" else 1):
        print(f"  {text}")
    findings = run.findings if any(isinstance(c, Inspector) for c in trainer.callbacks) else None
    if findings is not None:
        if not any(is_problem(f) for f in findings):
            print("inspector: no problems found")
        print("\n".join(format_finding(f) for f in findings), end="\n" if findings else "")
        print(f"report: {run.run_dir / REPORT_FILE}")
    stopper = next((c for c in trainer.callbacks if isinstance(c, cb.EarlyStopping) and c.stopped_step), None)
    if stopper is not None:
        print(f"stopped early at step {stopper.stopped_step:,}: val loss had not improved for {stopper.patience} "
              f"evaluations; the run keeps the best weights, from step {stopper.best_step:,} (--early-stopping 0 "
              "trains every step)")
    hint = train_longer_hint(run.config.train.max_steps, trainer) if stopper is None else None
    if hint:
        print(hint)
    print(f"run directory: {run.run_dir}")
    return 0


def train_args(p: argparse.ArgumentParser) -> None:
    add_data_model_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/MODEL-DATA, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--inspect-every", type=int, metavar="K", help="inspector: sample layer statistics every K "
                   "steps (default: about 50 samples per run, at most every 100 steps)")
    p.add_argument("--no-inspect", action="store_true", help="turn the inspector, findings and report off")
    p.add_argument("--log", metavar="NAMES", help="also log to TensorBoard and/or W&B: tensorboard, wandb or "
                   "tensorboard,wandb (train.log; needs lmlab[tensorboard] / lmlab[wandb])")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop when val loss has not improved "
                   "for PATIENCE evaluations, keeping the best weights (train.early_stopping; the GPT and Llama "
                   "rungs default to 3; 0 turns it off)")
    p.add_argument("--reduce-lr-on-plateau", type=int, metavar="PATIENCE", help="scale the learning rate by 0.1 "
                   "when val loss has not improved for PATIENCE evaluations")
    p.add_argument("--save-top-k", type=int, metavar="K", help="keep the K best weight files by val loss (and "
                   "the last) in RUN/checkpoints")


def cmd_lr_find(args: argparse.Namespace) -> int:
    """Learning-rate range test: sweep 1e-7 -> 10 exponentially on a copy of the model, plot loss vs LR and
    suggest a learning rate (valley rule by default)."""
    config = resolve_config(merge_layers(*cli_layers(args)))
    if config.train.threads == "auto":
        use_fitting_threads()
    data = prepare_data(config.data)
    # The batch `lmlab train` would choose for this vocabulary, so the suggestion suits the run it precedes.
    config, data, model, _ = fit_to_data(config, data, context_length(data))
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
                   help="how to pick the suggestion (default: valley: the steepest descent before the minimum, "
                   "combined with minimum/10)")
    p.add_argument("--plot", default="runs/lr_find.png", metavar="PNG", help="where to save the plot (default: "
                   "runs/lr_find.png, beside the runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
