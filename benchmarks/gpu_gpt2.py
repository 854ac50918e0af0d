"""GPT-2 124M training throughput and MFU on one GPU, through lmlab's own Trainer (bf16 autocast, fused
AdamW, SDPA attention, optional torch.compile), on random tokens of GPT-2's padded vocabulary (50,304), so
only the arithmetic is measured.

    PYTHONPATH=src python benchmarks/gpu_gpt2.py [--steps 60] [--batch 16] [--context 1024] [--compile]

Prints one JSON line: tokens/s and MFU over the steps after the warm-up (the first `--warmup` steps, which
pay for compilation and allocator growth, are left out).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lmlab.data import StreamDataset
from lmlab.run.config import build_model, resolve_config
from lmlab.training import performance as perf
from lmlab.training.callbacks import Callback
from lmlab.training.trainer import Trainer

VOCAB = 50_304  # GPT-2's 50,257 padded to a multiple of 64, as nanoGPT does


class _Clock(Callback):
    """Wall time from the end of step `first` to the end of step `last`, synchronised with the GPU only at
    those two steps: a wait at every step would stall the host's queue of kernels, which training does not."""

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last
        self.times: dict[int, float] = {}

    def on_step_end(self, trainer, record):
        if trainer.step in (self.first, self.last):
            torch.cuda.synchronize()
            self.times[trainer.step] = time.perf_counter()


class _Vocab:
    vocab_size, boundary_id = VOCAB, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    config = resolve_config({"model": {"name": "gpt2", "dropout": 0.0},
                             "train": {"batch_size": args.batch, "max_steps": args.steps, "eval_interval": 10**6,
                                       "log_interval": 10**6, "compile": args.compile, "ema_decay": 0.0,
                                       "device": "cuda", "warmup_steps": 10}})
    tokens = torch.randint(0, VOCAB, (args.batch * args.context * 50,), generator=torch.Generator().manual_seed(0))
    data = StreamDataset(tokens, args.context)
    model = build_model(config, _Vocab(), args.context)
    clock = _Clock(args.warmup, args.steps)
    trainer = Trainer(model, data, None, config.train, callbacks=[clock])
    trainer.fit()
    seconds_per_step = (clock.times[args.steps] - clock.times[args.warmup]) / (args.steps - args.warmup)
    tokens_per_s = args.batch * args.context / seconds_per_step
    flops = perf.flops_per_token(trainer.model, args.context)
    peak = perf.peak_flops(trainer.device, trainer.dtype)
    print(json.dumps({
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "compile": args.compile,
        "batch": args.batch, "context": args.context, "dtype": str(trainer.dtype),
        "ms_per_step": round(1000 * seconds_per_step, 2), "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))


if __name__ == "__main__":
    main()
