"""Gradient accumulation and the single-device speed settings (the CUDA paths cannot run here)."""

from __future__ import annotations

import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.data import LinesDataset, StreamDataset
from lmlab.errors import ConfigError
from lmlab.models.mlp import MLP, MLPConfig
from lmlab.training import performance as perf
from lmlab.training.callbacks import Callback
from lmlab.training.step import accumulate_gradients
from lmlab.training.trainer import Trainer


def tiny_mlp(seed: int = 0, vocab: int = 11) -> MLP:
    torch.manual_seed(seed)
    return MLP(MLPConfig(vocab_size=vocab, block_size=16, n_embd=4, n_hidden=8))


class Record(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, trainer, record):
        self.losses.append(record["loss"])


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_accumulated_gradient_equals_one_big_batch_with_padding():
    """Lines of different lengths: micro-batches predict different numbers of tokens, so a plain average of
    micro-batch losses would be wrong; weighting by token share must match the big batch."""
    gen = torch.Generator().manual_seed(0)
    seqs = [[0, *torch.randint(1, 11, (n,), generator=gen).tolist(), 0] for n in (1, 7, 3, 9, 2, 5)]
    data = LinesDataset(seqs, pad_id=0)
    micro = [data._rows(torch.tensor(rows)) for rows in ([0, 1], [2, 3], [4, 5])]
    big = data._rows(torch.arange(6))
    model = tiny_mlp()
    total = sum(int((y[:, 1:] != -100).sum()) for _, y in micro)
    loss = accumulate_gradients(model, micro, total_tokens=total)
    accumulated = grads(model)
    model.zero_grad()
    big_loss = model(*big[:1], labels=big[1]).loss
    big_loss.backward()
    assert loss.item() == pytest.approx(big_loss.item(), abs=1e-6)
    for a, b in zip(accumulated, grads(model), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the naive mean of micro-batch means differs here, so the test can tell the two apart
    naive = sum(model(x, labels=y).loss.item() for x, y in micro) / 3
    assert abs(naive - big_loss.item()) > 1e-3


def test_trainer_with_accumulation_trains_as_the_big_batch():
    ids = torch.randint(0, 11, (2000,), generator=torch.Generator().manual_seed(1))
    data = StreamDataset(ids, block_size=16)
    runs = []
    for batch, accum in ((4, 3), (12, 1)):
        config = TrainConfig(batch_size=batch, grad_accum_steps=accum, max_steps=4, warmup_steps=0,
                             eval_interval=100, log_interval=1, device="cpu")
        record = Record()
        trainer = Trainer(tiny_mlp(), data, None, config, callbacks=[record]).fit()
        losses = record.losses
        runs.append((losses, [p.detach().clone() for p in trainer.model.parameters()], trainer.tokens_seen))
    (l1, p1, t1), (l2, p2, t2) = runs
    assert l1 == pytest.approx(l2, abs=1e-5) and t1 == t2 == 4 * 12 * 15
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_speed_settings_on_cpu():
    cpu = torch.device("cpu")
    assert perf.resolve_dtype("auto", cpu) == torch.float32  # no bf16 autocast on a CPU by default
    assert perf.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert not perf.fused_adamw_available(cpu)
    assert perf.peak_flops(cpu, torch.float32) is None
    assert perf.peak_flops(cpu, torch.float32, override_tflops=0.09) == pytest.approx(9e10)
    model = tiny_mlp()
    assert perf.flops_per_token(model, 16) == 6 * sum(p.numel() for p in model.parameters())
    with perf.autocast(cpu, torch.bfloat16):  # what CUDA gets; on CPU the same code path runs
        out = model(torch.zeros(2, 5, dtype=torch.long)).logits
    assert out.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0)


def test_mfu_in_the_progress_record_when_the_peak_is_known():
    ids = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(batch_size=4, max_steps=2, log_interval=1, eval_interval=100, device="cpu",
                         peak_tflops=0.09)
    trainer = Trainer(tiny_mlp(), StreamDataset(ids, 16), None, config).fit()
    assert 0 < trainer.last_record["mfu"] < 1 and trainer.last_record["tokens_per_s"] > 0


@pytest.mark.slow
def test_compiled_training_matches_eager():
    ids = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(1))
    finals = []
    for compile_model in (False, True):
        config = TrainConfig(batch_size=4, max_steps=3, eval_interval=100, device="cpu", compile=compile_model)
        trainer = Trainer(tiny_mlp(), StreamDataset(ids, 16), None, config).fit()
        finals.append(trainer.last_record["loss"])
    assert finals[0] == pytest.approx(finals[1], abs=1e-4)
