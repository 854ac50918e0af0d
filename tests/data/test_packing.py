"""Packed lines-mode batches (data/datasets.py `pack`): the same examples as a padded batch, laid side by
side, and the models that take them (`packs_examples`) compute every example as in a row of its own."""

import pytest
import torch

from lmlab.data.datasets import IGNORE_INDEX, LinesDataset, best_fit
from lmlab.models import REGISTRY
from lmlab.models.attention import document_mask
from lmlab.models.base import capability

V = 11


def _dataset(seed=0, n=60, longest=9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, longest - 1, (n,), generator=g).tolist()
    sequences = [[0, *torch.randint(1, V, (k,), generator=g).tolist(), 0] for k in lengths]
    return LinesDataset(sequences, pad_id=0, packing=True)


def test_best_fit_places_every_example_once_and_overfills_no_row():
    lengths = [5, 3, 8, 2, 2, 7, 1, 4, 6, 3]
    row, offset = best_fit(lengths, 8)
    cells = {(r, o + t) for r, o, k in zip(row, offset, lengths, strict=True) for t in range(k)}
    assert len(cells) == sum(lengths)  # no two examples overlap
    assert all(o + k <= 8 for o, k in zip(offset, lengths, strict=True))
    assert max(row) + 1 == 6  # 41 tokens in rows of 8: best-fit decreasing needs the 6 rows that suffice


def test_packed_batch_holds_the_sampled_examples_with_positions_from_zero():
    data = _dataset()
    padded = data.sample_batch(32, torch.Generator().manual_seed(3))
    packed = data.sample_packed(32, torch.Generator().manual_seed(3))
    assert data.block_size <= packed.input_ids.size(1) <= data.pack_width(32) <= 2 * data.block_size
    # the same targets, each example's tokens in order after its position 0
    assert sorted(padded[1][padded[1] != IGNORE_INDEX].tolist()) == sorted(
        packed.labels[packed.labels != IGNORE_INDEX].tolist())
    starts = packed.position_ids == 0
    assert torch.all(packed.labels[starts] == IGNORE_INDEX)  # an example's first token is context only
    rebuilt = []
    for ids, positions in zip(packed.input_ids.tolist(), packed.position_ids.tolist(), strict=True):
        for token, position in zip(ids, positions, strict=True):
            if position == 0:
                rebuilt.append([])
            rebuilt[-1].append(token)
    real = sorted(r for r in rebuilt if len(r) > 1)  # a lone pad token is a one-token "example"
    expected = sorted(row[: int((labels != IGNORE_INDEX).sum()) + 1]
                      for row, labels in zip(padded[0].tolist(), padded[1], strict=True))
    assert len(expected) == 32 and real == expected


def test_padding_is_at_most_a_tenth_of_the_positions_on_names():
    from lmlab.config import DataConfig
    from lmlab.run.data import prepare_data

    train = prepare_data(DataConfig(source="names")).splits["train"]
    drawn, packed = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    real = positions = padded_positions = 0
    for _ in range(20):
        lengths = train.lengths[torch.randint(len(train), (128,), generator=drawn)]
        real += int(lengths.sum())
        padded_positions += 128 * int(lengths.max())
        positions += train.sample_packed(128, packed).input_ids.numel()
    assert 1 - real / positions <= 0.10
    assert 1 - real / padded_positions > 0.3  # what packing saves: a third of a padded batch is padding


def test_document_mask_is_block_diagonal_and_causal():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    mask = document_mask(positions)[0, 0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[:3, :3] = torch.ones(3, 3, dtype=torch.bool).tril()
    expected[3:5, 3:5] = torch.ones(2, 2, dtype=torch.bool).tril()
    expected[5, 5] = True
    assert torch.equal(mask, expected)


PACKING_MODELS = [name for name, spec in REGISTRY.items() if capability(spec.model_cls, "packs_examples")]


def test_the_transformers_pack():
    assert {"gpt", "llama", "gpt+rope", "gpt+gqa"} <= set(PACKING_MODELS)
    assert not capability(REGISTRY["lstm"].model_cls, "packs_examples")


@pytest.mark.parametrize("name", PACKING_MODELS)
def test_packed_loss_and_gradients_equal_the_padded_batch(name):
    """The reference: the same examples, one a row, padded (what every model did before packing)."""
    data = _dataset(seed=1)
    spec = REGISTRY[name]
    overrides = {"n_layer": 2, "n_head": 2, "n_embd": 16}
    if "n_kv_head" in spec.config_cls.__dataclass_fields__:
        overrides["n_kv_head"] = 1 if name == "gpt+gqa" else 2
    config = spec.config_cls(vocab_size=V, block_size=data.block_size, preset=spec.config_cls().preset,
                             **overrides)
    torch.manual_seed(0)
    model = spec.model_cls(config).double().eval()  # dropout off: the only thing packing may change
    padded = data.sample_batch(24, torch.Generator().manual_seed(5))
    packed = data.sample_packed(24, torch.Generator().manual_seed(5))
    assert packed.input_ids.numel() < padded[0].numel()
    losses, grads = [], []
    for batch, extra in [(padded, {}), (packed, {"position_ids": packed.position_ids})]:
        model.zero_grad()
        loss = model(batch[0], labels=batch[1], **extra).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-9)


def _losses(tiny_names, packing: bool, model: str = "gpt") -> list[float]:
    from lmlab.run.config import build_model, resolve_config
    from lmlab.run.data import prepare_data
    from lmlab.training.trainer import Trainer

    config = resolve_config({"data": {"source": str(tiny_names), "packing": packing},
                             "model": {"name": model, "n_layer": 1, "n_embd": 16, "n_head": 2, "dropout": 0.0},
                             "train": {"max_steps": 6, "log_interval": 1, "batch_size": 16,
                                       "threads": 1, "eval_interval": 100}})
    data = prepare_data(config.data)
    net = build_model(config, data.tokenizer, data.splits["train"].block_size)
    trainer = Trainer(net, data.splits["train"], None, config.train)
    assert trainer.packing == packing
    losses = []
    trainer.callbacks.append(type("Record", (), {"on_step_end": lambda self, t, r: losses.append(r["loss"])})())
    trainer.fit()
    return losses


def test_without_dropout_a_packed_run_follows_the_padded_one(tiny_names):
    """The same examples each step, so the same trajectory to rounding: packing changes how a batch is laid
    out, not what it holds (with dropout, its draws differ)."""
    assert _losses(tiny_names, True) == pytest.approx(_losses(tiny_names, False), abs=1e-5)
