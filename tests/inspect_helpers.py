"""Small models and a training helper shared by the inspector, findings and report tests."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from lmlab.config import DataConfig, TrainConfig
from lmlab.inspector import Inspector, find_problems
from lmlab.models.base import ModelOutput, causal_lm_loss
from lmlab.models.mlp import MLP, MLPConfig
from lmlab.training.callbacks import Callback
from lmlab.run.data import prepare_data
from lmlab.training.trainer import Trainer, TrainingDiverged


def tiny_data(path):
    return prepare_data(DataConfig(source=str(path)))


def tiny_mlp(data, **kw) -> MLP:
    torch.manual_seed(0)
    cfg = MLPConfig(vocab_size=data.tokenizer.vocab_size, block_size=data.splits["train"].block_size,
                    pad_id=data.tokenizer.boundary_id, n_embd=8, n_hidden=32, **kw)
    return MLP(cfg)


class TokenwiseLM(nn.Module):
    """embedding -> body (acting on the last axis) -> head; optionally looks one token ahead (a planted leak)."""

    def __init__(self, vocab: int, block: int, body: nn.Module, width: int = 16, peek: bool = False):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, block_size=block)
        self.embedding = nn.Embedding(vocab, width)
        self.body = body
        self.head = nn.Linear(width, vocab)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
        self.peek = peek

    def forward(self, input_ids, labels=None, **_):
        if self.peek:  # position t also reads token t+1: the future leaks into the present
            x = self.embedding(input_ids) + self.embedding(torch.roll(input_ids, -1, dims=1))
        else:
            x = self.embedding(input_ids)  # (B, T, C)
        logits = self.head(self.body(x))  # (B, T, V)
        return ModelOutput(logits=logits, loss=causal_lm_loss(logits, labels) if labels is not None else None)


class TinySelfAttention(nn.Module):
    """Multi-head self-attention that exposes its probabilities on request (record_attention / last_attention)."""

    def __init__(self, width: int, n_head: int, causal: bool = True):
        super().__init__()
        self.n_head, self.causal = n_head, causal
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.record_attention = False
        self.last_attention = None

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = q @ k.transpose(-2, -1) / (C // self.n_head) ** 0.5  # (B, nh, T, T)
        if self.causal:
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = att.softmax(-1)
        if self.record_attention:
            self.last_attention = att.detach()
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return x + self.proj(y)


def train(model, data, *, steps=60, every=5, run_dir=None, **train_kw):
    """Train with an Inspector; returns (stats, findings, trainer). A diverged run still gets its findings."""
    values = {"max_steps": steps, "warmup_steps": 0, "schedule": "constant", "eval_interval": max(steps // 3, 1),
              "log_interval": 10, "device": "cpu", "batch_size": 32, "lr": 1e-2, "weight_decay": 0.0}
    values.update(train_kw)
    inspector = Inspector(every=every)
    trainer = Trainer(model, data.splits["train"], data.splits["val"], TrainConfig(**values), run_dir=run_dir,
                      callbacks=[inspector])
    try:
        trainer.fit()
    except TrainingDiverged:
        inspector.finish(trainer)
    return inspector.stats, find_problems(inspector.stats), trainer


def rules(findings) -> set[str]:
    return {f["rule"] for f in findings}


class StopAt(Callback):
    """Ends training after step `step`, as a kill would after that step's checkpoint (resume tests)."""

    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, record):
        if trainer.step == self.at:
            trainer.stop()
