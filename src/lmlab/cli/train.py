"""`lmlab train` and `lmlab lr-find`: parse the options, call the pipeline (lmlab.run), print."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lmlab.cli.common import add_data_model_args, cli_layers, fmt
from lmlab.errors import ConfigError, LmlabError, TrainingDiverged, check_count
from lmlab.experiments.groups import parse_seeds, seed_folder
from lmlab.files import claim_default_file

if TYPE_CHECKING:
    from lmlab import run as lmlab_run

# The pipeline, the inspector and the comparison (torch, all of them) are imported inside the commands that
# use them, so that `lmlab train --help` starts at once.

LR_FIND_PLOT = "runs/lr_find.png"
MAX_LR_FIND_STEPS = 100_000  # each a training step of the model


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model and print samples. Plain `lmlab train` trains the default model on the embedded names.
    Under `torchrun --nproc_per_node N -m lmlab train ...` it trains on N processes (DDP, or FSDP2 with
    --set train.parallel=fsdp); rank 0 alone logs and writes the run directory."""
    if args.inspect_every is not None and args.inspect_every < 1:
        raise ConfigError(f"--inspect-every must be at least 1, got {args.inspect_every}")
    if args.seeds is not None:
        from lmlab.run.config import merge_layers

        return _train_seeds(args, merge_layers(*cli_layers(args)))
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun's rank: the others log warnings only
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
    inspect = False if args.no_inspect else (args.inspect_every or True)
    from lmlab import run as lmlab_run
    from lmlab.inspector import format_finding
    from lmlab.run.config import merge_layers

    try:
        run = lmlab_run.train(merge_layers(*cli_layers(args)), out=args.out, resume=args.resume, force=args.force,
                              inspect=inspect, torchrun=True)
    except TrainingDiverged as err:  # what the inspector saw, before the one-line error
        if err.findings:
            print("\n".join(format_finding(f) for f in err.findings))
        raise
    return _report(run)


def _train_seeds(args: argparse.Namespace, layers: dict) -> int:
    """`lmlab train --seeds N`: a seed group (experiments/seeds.py), then its runs and their mean ± SE."""
    if args.resume or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--seeds trains a new seed group on one process; it takes neither --resume nor torchrun "
                          "(run it again to finish a group that was stopped)")
    from lmlab.compare import compare_runs, format_table
    from lmlab.experiments.seeds import train_seeds
    from lmlab.run.config import resolve_config
    from lmlab.run.folder import default_run_dir

    config = resolve_config(layers)
    seeds = parse_seeds(args.seeds, config.train.seed)
    out = Path(args.out) if args.out else default_run_dir(config.model_name, config.data.source)
    inspect = False if args.no_inspect else (args.inspect_every or True)

    def on_seed_end(seed: int, run: lmlab_run.Run) -> None:
        if run.interrupted:
            return
        nll = run.summary["nll"]
        print(f"seed {seed}: val {fmt(nll.get('val'))}  test {fmt(nll.get('test'))} nats/token", file=sys.stderr,
              flush=True)

    runs = train_seeds(layers, out=out, seeds=seeds, force=args.force, inspect=inspect, on_seed_end=on_seed_end)
    if runs[-1].interrupted:
        print(f"interrupted at seed {seeds[len(runs) - 1]}; run the same command again to finish the group "
              "(finished seeds are kept)", file=sys.stderr)
        return 130
    rows = compare_runs([out, *(seed_folder(out, s) for s in seeds)])
    print(format_table(rows), end="")
    print(f"seed group: {out}")
    return 0


def _report(run: lmlab_run.Run) -> int:
    """What `lmlab train` prints when training ends: losses, samples, findings, where the run is."""
    from lmlab.inspector import format_finding, is_problem
    from lmlab.run.folder import REPORT_FILE

    trainer = run.trainer
    if trainer.nonfinite_steps:
        print(f"warning: {trainer.nonfinite_steps} step(s) with a non-finite loss or gradient were skipped",
              file=sys.stderr)
    if run.interrupted:
        print(f"interrupted at step {trainer.step}; checkpoint saved. Resume with: lmlab train --out "
              f"{run.run_dir} --resume", file=sys.stderr)
        return 130
    if not trainer.parallel.is_main:
        return 0
    summary = run.summary
    nll = summary["nll"]
    print(f"{run.config.model_name}: train {nll['train']:.4f}  val {fmt(nll.get('val'))}  test "
          f"{fmt(nll.get('test'))} nats/token after {trainer.step} steps ({summary['train_seconds']:.0f} s)")
    budget = summary.get("budget")
    if budget:
        print(f"budget {budget['requested']}: {summary['tokens']:,} tokens, {summary['flops']:.3g} FLOPs, "
              f"{summary['threads']} thread(s)" + ("" if budget["unit"] == "seconds" else
                                                  " (work: the same steps and numbers on any machine)"))
    print("samples:")
    for text in run.sample(n=10 if run.config.data.mode == "lines" else 1):
        print(f"  {text}")
    findings = run.findings if run.inspected else None
    if findings is not None:
        if not any(is_problem(f) for f in findings):
            print("inspector: no problems found")
        print("\n".join(format_finding(f) for f in findings), end="\n" if findings else "")
        print(f"report: {run.run_dir / REPORT_FILE}")
    stopper = run.stopped_early
    if stopper is not None:
        print(f"stopped early at step {stopper.stopped_step:,}: val loss had not improved for {stopper.patience} "
              f"evaluations; the run keeps the best weights, from step {stopper.best_step:,} (--early-stopping 0 "
              "trains every step)")
    print(f"run directory: {run.run_dir}")
    return 0


def train_args(p: argparse.ArgumentParser) -> None:
    add_data_model_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/MODEL-DATA, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--seeds", metavar="N|A,B,...", help="train N runs differing only in train.seed (counting up "
                   "from --seed), or the seeds listed, into --out/seed-SEED, and report mean ± SE; run again, it "
                   "keeps the finished seeds")
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
                   "when val loss has not improved for PATIENCE evaluations (train.reduce_lr_on_plateau)")
    p.add_argument("--save-top-k", type=int, metavar="K", help="keep the K best weight files by val loss (and "
                   "the last) in RUN/checkpoints (train.save_top_k)")


def cmd_lr_find(args: argparse.Namespace) -> int:
    """Learning-rate range test: sweep 1e-7 -> 10 exponentially on a copy of the model, plot loss vs LR and
    suggest a learning rate (valley rule by default)."""
    if not 0 < args.start_lr < args.end_lr:
        raise ConfigError("need 0 < --start-lr < --end-lr")
    check_count(args.num_iter, "--num-iter", MAX_LR_FIND_STEPS, least=3)
    from lmlab import run as lmlab_run
    from lmlab.run.config import merge_layers

    # The model, data and batch `lmlab train` would use, so the suggestion suits the run it precedes.
    result = lmlab_run.find_lr(merge_layers(*cli_layers(args)), start_lr=args.start_lr, end_lr=args.end_lr,
                               num_iter=args.num_iter, rule=args.rule)
    plot, note = args.plot, None
    if plot is None:  # the default name: never over a file already there, unless --force
        try:
            plot = claim_default_file(LR_FIND_PLOT, "the learning-rate plot", force=args.force,
                                      hint=" (choose a file with --plot)")
        except LmlabError as err:
            plot, note = None, f"plot not written: {err}"
    if plot:
        plot = result.plot(plot)
    if result.suggestion is None:
        raise ConfigError("the loss diverged at once; try a lower --start-lr")
    if note:
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps({"suggestion": result.suggestion, "rule": result.rule, "plot": plot and str(plot),
                          "lrs": result.lrs, "losses": result.losses}))
        return 0
    print(f"suggested learning rate: {result.suggestion:.2e} ({result.rule} rule, {len(result.lrs)} steps "
          f"from {args.start_lr:g} to {result.lrs[-1]:.3g}); try --set train.lr={result.suggestion:.2g}")
    if plot:
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
    p.add_argument("--plot", metavar="PNG", help=f"where to save the plot (default: {LR_FIND_PLOT}, beside the "
                   "runs, unless a file is there)")
    p.add_argument("--force", action="store_true", help=f"let the default plot replace {LR_FIND_PLOT}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
