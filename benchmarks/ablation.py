"""The modern-block ablation at equal steps: GPT-2's block with one change each, the full Llama rung, and
Muon, each trained for the same number of steps, one `lmlab train` per rung, on names (lines) or on a
stream of text such as tinyshakespeare.

    python3 benchmarks/ablation.py --steps 400 --out /tmp/ablation                 # embedded names
    python3 benchmarks/ablation.py --data /work/shared/data/names.txt --steps 400 --out /tmp/abl-names
    python3 benchmarks/ablation.py --preset nanogpt-cpu --steps 1000 --out /tmp/abl-shakespeare \\
        --data /work/shared/data/tinyshakespeare.txt
    python3 benchmarks/ablation.py --rungs gpt,llama+muon --out DIR --summarize   # only read DIR's runs

A rung name ending in `+muon` is the named model with train.optimizer=muon (Muon at train.muon_lr on the
hidden matrices, AdamW at train.lr on the rest). `--preset registry` keeps each model's registry training
defaults (only max_steps changes); `--preset nanogpt-cpu` gives every rung nanoGPT's CPU Shakespeare
configuration: stream mode, 4 layers x 4 heads x 128 wide, context 64, batch 12, no dropout, no biases, lr
1e-3 cosine to 1e-4 after 100 warm-up steps, weight decay 0.1, beta2 0.99, clip 1.0, no weight average, and
the last 10% of the text as val (no test split). No time budget in either: every rung trains all --steps.

Prints one row per rung: the NLL of the scored split (test if the data has one, else val; exact, nats per
token), its delta against `gpt` with the standard error of that delta, parameters, training seconds.
What is paired:
- lines mode: the summed NLL of each example (a name). Both rungs score the same examples, so each example's
  own difficulty cancels in its difference; SE = std of the per-example differences * sqrt(n) / tokens.
- stream mode: consecutive blocks of --block-tokens predicted tokens of the split. The split is scored as
  lmlab's exact evaluation does it (windows of the model's context that overlap by one token, so every token
  after the first is predicted exactly once, in stream order); the per-token NLLs are summed per block and
  the difference of the two rungs' block sums is what is paired. Tokens inside one window share context and
  are correlated, so pairing per token would understate the error; a block spans several whole windows
  (256 tokens = 4.06 windows of 63 predictions at context 64), leaving only the weak correlation across
  neighbouring block edges. The last partial block is kept (the mean stays exact).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

RUNGS = "gpt,gpt+rope,gpt+rmsnorm,gpt+swiglu,gpt+qknorm,gpt+gqa,gpt+muon,llama,llama+muon"

# nanoGPT's config/train_shakespeare_char.py with the README's CPU overrides (benchmarks/shakespeare_char.py)
PRESETS: dict[str, list[str]] = {
    "registry": [],
    "nanogpt-cpu": [
        "data.mode=stream", "data.block_size=64", "data.val_fraction=0.1", "data.test_fraction=0",
        "model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.dropout=0", "model.bias=false",
        "train.batch_size=12", "train.lr=1e-3", "train.min_lr_ratio=0.1", "train.schedule=cosine",
        "train.warmup_steps=100", "train.weight_decay=0.1", "train.beta1=0.9", "train.beta2=0.99",
        "train.grad_clip=1.0", "train.ema_decay=0",
    ],
}


def train(rung: str, args: argparse.Namespace) -> dict:
    model, muon = (rung.removesuffix("+muon"), True) if rung.endswith("+muon") else (rung, False)
    out = Path(args.out) / rung
    sets = PRESETS[args.preset] + [f"train.eval_interval={max(args.steps // 2, 1)}", "train.threads=1"]
    if muon:
        sets.append("train.optimizer=muon")
    sets += args.set  # last: the user's overrides win (e.g. train.budget=Ws)
    cmd = [sys.executable, "-m", "lmlab", "train", "--model", model, "--data", args.data, "--max-steps",
           str(args.steps), "--out", str(out), "--force", "--device", "cpu", "--seed", str(args.seed),
           "--no-inspect"]
    for pair in sets:
        cmd += ["--set", pair]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


@torch.no_grad()
def unit_nll(run_dir: Path, block_tokens: int) -> tuple[str, torch.Tensor, int]:
    """(split, summed NLL of each paired unit, number of predicted tokens) on the run's test split, or its
    val split when it has no test split. Units: examples in lines mode, blocks of the stream in stream mode."""
    from lmlab.data.datasets import IGNORE_INDEX, LinesDataset, next_token_targets
    from lmlab.run.data import prepare_data
    from lmlab.run.folder import load_run

    run = load_run(run_dir)
    run.model.eval()
    splits = prepare_data(run.config.data, tokenizer=run.tokenizer).splits
    split = "test" if len(splits.get("test", ())) else "val"
    dataset = splits[split]
    per_row, per_token = [], []
    for input_ids, labels in dataset.iter_batches(256):
        logits = run.model(input_ids).logits[:, :-1].float()  # (B, T-1, V)
        target = next_token_targets(labels)  # (B, T-1)
        nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
        per_row.append(nll.sum(dim=1).double())
        per_token.append(nll[target != IGNORE_INDEX].double())  # row-major: the stream's order
    tokens = int(sum(len(t) for t in per_token))
    if isinstance(dataset, LinesDataset):
        return split, torch.cat(per_row), tokens
    stream = torch.cat(per_token)
    starts = torch.arange(0, len(stream), block_tokens)
    return split, torch.segment_reduce(stream, "sum", lengths=torch.diff(starts, append=torch.tensor(
        [len(stream)]))), tokens


def paired_delta(run: tuple[torch.Tensor, int], base: tuple[torch.Tensor, int]) -> tuple[float, float, int]:
    """(mean NLL per token of run minus base, its standard error over the paired units, units)."""
    (a, tokens), (b, _) = run, base
    diff = a - b
    return float(diff.sum() / tokens), float(diff.std() * math.sqrt(len(diff)) / tokens), len(diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default=RUNGS)
    parser.add_argument("--data", default="names")
    parser.add_argument("--preset", choices=list(PRESETS), default="registry")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--block-tokens", type=int, default=256, help="stream mode: predicted tokens per block")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="to every rung's train")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--summarize", action="store_true", help="only read the runs already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    rungs = args.rungs.split(",")
    rows = {rung: json.loads((out / rung / "summary.json").read_text()) if args.summarize else train(rung, args)
            for rung in rungs}
    scored = {rung: unit_nll(out / rung, args.block_tokens) for rung in rows}
    split, _, tokens = scored[rungs[0]]
    units = len(scored[rungs[0]][1])
    print(f"split {split}: {tokens:,} predicted tokens in {units:,} paired units")
    print(f"{'rung':<12} {split:>7} {'delta vs gpt':>17} {'params':>9} {'steps':>6} {'seconds':>8}")
    for rung, summary in rows.items():
        _, sums, n = scored[rung]
        delta = "-"
        if rung != "gpt" and "gpt" in scored:
            mean, se, _ = paired_delta((sums, n), scored["gpt"][1:])
            delta = f"{mean:+.4f} ± {se:.4f}"
        print(f"{rung:<12} {float(sums.sum()) / n:7.4f} {delta:>17} {summary['parameters']:>9,} "
              f"{summary.get('steps', '?'):>6} {summary['train_seconds']:8.0f}")


if __name__ == "__main__":
    main()
