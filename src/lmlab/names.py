"""The names a user types, known without importing torch.

`lmlab --help` and `lmlab COMMAND --help` must start at once, and models/ imports torch to build its REGISTRY;
so the names the help lists are written here, in registry order, and tests/test_names.py holds them equal to
models.REGISTRY's keys and to ladder.default_rungs() (a rung added there without its name here fails it).
"""

from __future__ import annotations

MODEL_NAMES: tuple[str, ...] = (
    "ngram", "bigram", "mlp", "wavenet", "rnn", "gru", "lstm",
    "gpt", "gpt-nano", "gpt-micro", "gpt-mini", "gpt-small", "gpt2",
    "llama", "llama-nano", "llama-micro", "llama-mini", "llama-small", "llama-124m",
    "gpt+rope", "gpt+rmsnorm", "gpt+swiglu", "gpt+relu2", "gpt+qknorm", "gpt+gqa", "gpt+nobias", "gpt+untied",
)
DEFAULT_MODEL = "gpt"  # models.DEFAULT_MODEL, for the help
LADDER_RUNGS: tuple[str, ...] = ("ngram", "bigram", "mlp", "wavenet", "rnn", "gru", "lstm", "gpt", "llama")
"""ladder.default_rungs(): the first registered name of each model class."""

