"""Issue 6 figures: tokenization MB/s per tokenizer, counted-bigram fit tokens/s on a prepared corpus, and
whether torch.compile helps GPT training on this CPU.

    PYTHONPATH=src python benchmarks/bench_scale.py [tokenize] [bigram] [compile]

Prints one JSON object with the machine, date and load average (this machine is shared: compare figures
taken under similar load only).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmlab.data import load_corpus
from lmlab.tokenizers import encode_large, fit_tokenizer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def bench_tokenize() -> dict:
    corpora = {"tinyshakespeare": SHAKESPEARE.read_text(encoding="utf-8"),
               "pystdlib": "\n".join(load_corpus("pystdlib").documents)}
    results = {}
    for name, text in corpora.items():
        megabytes = len(text.encode()) / 1e6
        for kind in ("char", "word", "bpe"):
            started = time.perf_counter()
            tok = fit_tokenizer(kind, [text])
            fit = time.perf_counter() - started
            started = time.perf_counter()
            tokens = sum(len(ids) for ids in encode_large(tok, text))
            seconds = time.perf_counter() - started
            results[f"{name}/{kind}"] = {"mb": round(megabytes, 2), "vocab": tok.vocab_size, "tokens": tokens,
                                         "fit_s": round(fit, 2), "encode_mb_per_s": round(megabytes / seconds, 2),
                                         "bytes_per_token": round(megabytes * 1e6 / tokens, 2)}
    return results


def bench_bigram() -> dict:
    from lmlab.run.config import build_model, resolve_config
    from lmlab.run.data import prepare_data
    from lmlab.data.shard_writer import PrepareOptions, prepare_shards
    from lmlab.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        prepare_shards(PrepareOptions(source="pystdlib", out=tmp))
        config = resolve_config({"data": {"source": tmp}, "model": {"name": "ngram", "n": 2}})
        data = prepare_data(config.data)
        model = build_model(config, data.tokenizer, data.splits["train"].block_size)
        trainer = Trainer(model, data.splits["train"], None, config.train)
        started = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - started
    tokens = data.splits["train"].num_predictions
    return {"corpus": "pystdlib (char shards)", "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds)}


def bench_compile(steps: int = 30, warmup: int = 5) -> dict:
    from lmlab.config import TrainConfig
    from lmlab.data import StreamDataset
    from lmlab.models.gpt import GPT, GPTConfig
    from lmlab.training.trainer import Trainer

    ids = torch.randint(0, 65, (200_000,), generator=torch.Generator().manual_seed(0))
    data = StreamDataset(ids, 64)
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False))
        config = TrainConfig(batch_size=12, max_steps=warmup, warmup_steps=0, eval_interval=10**6,
                             device="cpu", compile=compiled)
        trainer = Trainer(model, data, None, config)
        started = time.perf_counter()
        trainer.fit()  # includes compilation
        first = time.perf_counter() - started
        trainer.config = TrainConfig(batch_size=12, max_steps=warmup + steps, warmup_steps=0,
                                     eval_interval=10**6, device="cpu", compile=compiled)
        started = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - started
        results["compiled" if compiled else "eager"] = {
            "first_steps_s": round(first, 1), "tokens_per_s": round(steps * 12 * 64 / seconds)}
    results["speedup"] = round(results["compiled"]["tokens_per_s"] / results["eager"]["tokens_per_s"], 2)
    return results


def main() -> None:
    wanted = sys.argv[1:] or ["tokenize", "bigram", "compile"]
    out = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
           "load_average": os.getloadavg()[0], "torch_threads": torch.get_num_threads()}
    for name in wanted:
        out[name] = {"tokenize": bench_tokenize, "bigram": bench_bigram, "compile": bench_compile}[name]()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
