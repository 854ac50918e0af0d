"""The contract every registered model keeps, checked for EVERY name in models.REGISTRY (a new rung is tested the
moment it is registered): built tiny by the run's own build_model, it takes `model(input_ids, labels=...)` and
returns logits (B, T, V) with the shifted cross-entropy as `.loss`; `generate` extends the ids within the
vocabulary; its weights saved and loaded give the same logits; and a run stopped and resumed from its
checkpoint ends with the weights of the run that went straight through."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from inspect_helpers import StopAt

from lmlab.models import REGISTRY, causal_lm_loss
from lmlab.models.base import capability
from lmlab.run.config import build_model, resolve_config
from lmlab.run.data import prepare_data
from lmlab.training.checkpoint.format import load_weights, save_weights
from lmlab.training.trainer import Trainer

# The smallest sizes each family accepts, for the fields its config has (wavenet keeps its dilation depth).
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_hidden": 16}
BLOCK = 16
QUICK = {"max_steps": 4, "eval_interval": 2, "log_interval": 1, "batch_size": 4, "threads": 1,
         "early_stopping": 0, "warmup_steps": 1}


def _tiny(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(REGISTRY[name].config_cls)}
    sizes = {k: v for k, v in TINY.items() if k in fields and not (name == "wavenet" and k == "n_layer")}
    if "n_kv_head" in fields and REGISTRY[name].config_cls().n_kv_head:  # grouped-query: fewer kv heads
        sizes["n_kv_head"] = 1
    return {"name": name, **sizes}


@pytest.fixture(scope="module")
def names_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "names.txt"
    path.write_text("\n".join(f"{a}{b}{c}" for a in "kmlr" for b in "aeio" for c in ("", "n", "ra", "lo")) + "\n",
                    encoding="utf-8")
    config = resolve_config({"data": {"source": str(path), "mode": "stream", "block_size": BLOCK}})
    return prepare_data(config.data)


def _config(name, data):
    return resolve_config({"data": {"source": "unused", "mode": "stream", "block_size": BLOCK},
                           "model": _tiny(name), "train": QUICK})


def _build(config, data):
    return build_model(config, data.tokenizer, BLOCK)


def test_every_registered_name_is_covered():
    assert len(REGISTRY) >= 27  # the parametrisation below reads REGISTRY itself; this guards an empty one


@pytest.mark.parametrize("name", list(REGISTRY))
def test_forward_loss_generate_save_load(name, names_data, tmp_path):
    config = _config(name, names_data)
    model = _build(config, names_data).eval()
    vocab = names_data.tokenizer.vocab_size
    ids, _ = names_data.splits["train"].sample_batch(3, torch.Generator().manual_seed(0))
    if capability(model, "counted"):  # counted models learn their table in one pass, before they predict
        model.fit_counts(ids, ids)
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert out.logits.shape == (3, ids.shape[1], vocab)
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, causal_lm_loss(out.logits, ids), atol=1e-5)
    grown = model.generate(ids[:, :4], 5, temperature=0)
    assert grown.shape == (3, 9) and torch.equal(grown[:, :4], ids[:, :4])
    assert int(grown.min()) >= 0 and int(grown.max()) < vocab
    save_weights(model, tmp_path / "model.safetensors", step=7)
    fresh = _build(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=1)), names_data).eval()
    assert load_weights(fresh, tmp_path / "model.safetensors") == 7
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, out.logits)


@pytest.mark.parametrize("name", [n for n in REGISTRY if n != "ngram"])  # ngram counts once: no steps to resume
def test_a_resumed_run_ends_where_a_straight_one_does(name, names_data, tmp_path):
    config = _config(name, names_data)
    train, val = names_data.splits["train"], names_data.splits["val"]
    straight = Trainer(_build(config, names_data), train, val, config.train, run_dir=tmp_path / "a").fit()
    Trainer(_build(config, names_data), train, val, config.train, run_dir=tmp_path / "b",
            callbacks=[StopAt(2)]).fit()
    resumed = Trainer(_build(config, names_data), train, val, config.train, run_dir=tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b")
    assert resumed.step == 2
    resumed.fit()
    assert resumed.step == straight.step == QUICK["max_steps"]
    for (key, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
