"""Issue 18 device check: on CUDA the TensorBoard logger adds train/mfu, and its losses equal metrics.jsonl's.

    python benchmarks/check_loggers_cuda.py [STEPS]      # needs a GPU and `pip install 'lmlab[tensorboard]'`

A GPT (registry defaults) on random tokens; prints the scalar tags, whether the logged losses match
metrics.jsonl, and the MFU per logged step. On CPU it runs too, and says NO MFU (none is measured there).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing import event_accumulator

from lmlab.config import TrainConfig
from lmlab.data import StreamDataset
from lmlab.models import REGISTRY
from lmlab.training import loggers as lg
from lmlab.training.loggers.tensorboard import TENSORBOARD_DIR
from lmlab.training.trainer import Trainer


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    cuda = torch.cuda.is_available()
    print("torch", torch.__version__, torch.cuda.get_device_name(0) if cuda else "no CUDA device")
    ids = torch.randint(64, (200_000,), generator=torch.Generator().manual_seed(0))
    train, val = StreamDataset(ids[:180_000], 128), StreamDataset(ids[180_000:], 128)
    spec = REGISTRY["gpt"]
    model = spec.model_cls(spec.config_cls(vocab_size=64, block_size=128))
    out = Path(tempfile.mkdtemp())
    config = TrainConfig(max_steps=steps, batch_size=32, eval_interval=30, log_interval=10, warmup_steps=5,
                         device="cuda" if cuda else "cpu")
    trainer = Trainer(model, train, val, config, run_dir=out, callbacks=[lg.TensorBoardLogger(out, {"train": {}})])
    started = time.time()
    trainer.fit()
    print("fit", round(time.time() - started, 1), "s;", trainer.dtype)
    acc = event_accumulator.EventAccumulator(str(out / TENSORBOARD_DIR))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = [(r["step"], r["loss"]) for r in records if "loss" in r]
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    print("tags", tags)
    print("loss steps match", [s for s, _ in got] == [s for s, _ in want],
          "max abs diff", max(abs(a[1] - b[1]) for a, b in zip(got, want, strict=True)))
    print("mfu", [(e.step, round(e.value, 5)) for e in acc.Scalars("train/mfu")] if "train/mfu" in tags else "NO MFU")


if __name__ == "__main__":
    main()
