"""The names a user types, known without importing torch, and the one answer to a misspelt name.

`lmlab --help` and `lmlab COMMAND --help` must start at once, and models/ imports torch to build its REGISTRY;
so the names the help lists are written here, in registry order, and tests/test_names.py holds them equal to
models.REGISTRY's keys and to ladder.default_rungs() (a rung added there without its name here fails it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MODEL_NAMES: tuple[str, ...] = (
    "ngram", "bigram", "mlp", "wavenet", "rnn", "gru", "lstm",
    "gpt", "gpt-nano", "gpt-micro", "gpt-mini", "gpt-small", "gpt2",
    "llama", "llama-nano", "llama-micro", "llama-mini", "llama-small", "llama-124m",
    "gpt+rope", "gpt+rmsnorm", "gpt+swiglu", "gpt+relu2", "gpt+qknorm", "gpt+gqa", "gpt+nobias", "gpt+untied",
)
DEFAULT_MODEL = "gpt"  # models.DEFAULT_MODEL, for the help
LADDER_RUNGS: tuple[str, ...] = ("ngram", "bigram", "mlp", "wavenet", "rnn", "gru", "lstm", "gpt", "llama")
"""ladder.default_rungs(): the first registered name of each model class."""


def did_you_mean(name: object, choices: Iterable[str], prefix: str = "") -> str:
    """'did you mean 'gpt'? ' for a name close to one of `choices` (difflib's similarity of at least 0.6: 'gtp'
    finds 'gpt', 'xyz' finds nothing), else ''; it goes in front of the message's list of choices. A config
    key is matched without its section and shown with it (prefix 'train.'): a shared 'train.' would make
    any two keys look alike."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {prefix + close[0]!r}? " if close else ""
