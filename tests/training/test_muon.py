"""train.optimizer=muon: which parameters Muon gets, each group's rate, that a step equals torch's own Muon
and AdamW stepped side by side, gradient accumulation, and exact resume through a checkpoint."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lmlab.config import DataConfig, TrainConfig
from lmlab.models import Llama, LlamaConfig
from lmlab.run.data import prepare_data
from lmlab.training.callbacks import Callback
from lmlab.training.muon import Muon, MuonWithAdamW, orthogonalize, split_hidden_matrices
from lmlab.training.step import build_optimizer
from lmlab.training.trainer import Trainer


def tiny_llama(vocab: int = 13, block_size: int = 12, **kwargs) -> Llama:
    torch.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, n_embd=16,
                             dropout=0.0, **kwargs))


def test_hidden_matrices_go_to_muon_the_rest_to_adamw():
    model = tiny_llama(tie_embeddings=False)
    hidden, other = split_hidden_matrices(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in hidden} == {
        f"transformer.h.{i}.{m}.weight" for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_gate", "mlp.c_proj")}
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.ln_f.weight"} <= {names[id(p)] for p in other}
    assert len(hidden) + len(other) == len(list(model.parameters()))


def test_a_step_is_torch_muon_at_muon_lr_and_adamw_at_lr(monkeypatch):
    monkeypatch.setattr(Muon, "cpu_dtype", torch.bfloat16)  # torch's Newton-Schulz dtype: bit-for-bit equal
    config = TrainConfig(optimizer="muon", lr=3e-3, muon_lr=0.05, weight_decay=0.1, beta2=0.95)
    model = tiny_llama()
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, MuonWithAdamW)
    hidden, other = split_hidden_matrices(reference)
    muon = torch.optim.Muon(hidden, lr=0.05, weight_decay=0.1)
    adamw = torch.optim.AdamW([{"params": [p for p in other if p.dim() == 2], "weight_decay": 0.1},
                               {"params": [p for p in other if p.dim() < 2], "weight_decay": 0.0}],
                              lr=3e-3, betas=(0.9, 0.95))
    x = torch.randint(13, (4, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for group in optimizer.param_groups:
            group["lr"] = config.lr  # what the trainer does with the scheduled rate
        for m in (model, reference):
            m(x, labels=x).loss.backward()
        optimizer.step()
        muon.step()
        adamw.step()
        for opt in (optimizer, muon, adamw):
            opt.zero_grad(set_to_none=True)
        assert all(group["lr"] == config.lr for group in optimizer.param_groups)  # the ratio is not left behind
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_newton_schulz_runs_in_float32_on_cpu():
    """The float32 iteration lands where float64 does (bf16's rounding is ~1e-2 off), for wide and tall."""
    for shape in [(8, 24), (24, 8)]:
        g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
        exact = orthogonalize(g.double(), 3.4445, -4.775, 2.0315, 5, 1e-7, torch.float64)
        got = orthogonalize(g, 3.4445, -4.775, 2.0315, 5, 1e-7, torch.float32)
        assert got.dtype == torch.float32 and got.shape == shape
        torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-5)
        bf16 = orthogonalize(g, 3.4445, -4.775, 2.0315, 5, 1e-7, torch.bfloat16).double()
        assert (bf16 - exact).abs().max() > 1e-3  # the test could tell the dtypes apart
    model = tiny_llama()
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon"))
    x = torch.randint(13, (4, 12), generator=torch.Generator().manual_seed(1))
    model(x, labels=x).loss.backward()
    optimizer.step()
    assert isinstance(optimizer.muon, Muon) and optimizer.muon.cpu_dtype == torch.float32


def make_trainer(data, run_dir, callbacks=(), **train):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=data.tokenizer.vocab_size, block_size=data.splits["train"].block_size,
                              n_layer=1, n_head=2, n_embd=16, dropout=0.1, qk_norm=True))
    config = TrainConfig(**{"optimizer": "muon", "muon_lr": 0.02, "lr": 3e-3, "max_steps": 12,
                            "eval_interval": 6, "log_interval": 2, "batch_size": 8, "warmup_steps": 2,
                            "seed": 3, "device": "cpu", **train})
    return Trainer(model, data.splits["train"], data.splits["val"], config, run_dir=run_dir, callbacks=callbacks)


class InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, record):
        if trainer.step == self.step:
            trainer.interrupt()


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_muon_trains_and_resumes_exactly(grad_accum_steps, tiny_names, tmp_path):
    data = prepare_data(DataConfig(source=str(tiny_names), mode="lines"))
    straight = make_trainer(data, tmp_path / "a", grad_accum_steps=grad_accum_steps).fit()
    first = make_trainer(data, tmp_path / "b", [InterruptAt(7)], grad_accum_steps=grad_accum_steps).fit()
    assert first.step == 7
    second = make_trainer(data, tmp_path / "b", grad_accum_steps=grad_accum_steps)
    second.load_checkpoint(tmp_path / "b")
    assert second.optimizer.muon.state  # the momentum buffers came back from trainer_state.pt
    second.fit()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert straight.last_val_loss < math.log(data.tokenizer.vocab_size) - 0.05  # below uniform: it learned


def test_lr_finder_sweeps_both_rates_together(tiny_names):
    from lmlab.training.lr_finder import lr_find

    data = prepare_data(DataConfig(source=str(tiny_names), mode="lines"))
    model = Llama(LlamaConfig(vocab_size=data.tokenizer.vocab_size, block_size=data.splits["train"].block_size,
                              n_layer=1, n_head=2, n_embd=16))
    config = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=1e-2, device="cpu", batch_size=8)
    result = lr_find(model, data.splits["train"], config, start_lr=1e-5, end_lr=10.0, num_iter=30)
    assert len(result.lrs) >= 10 and all(math.isfinite(v) for v in result.losses)
    assert result.suggestion is not None and 1e-5 <= result.suggestion <= 10.0
