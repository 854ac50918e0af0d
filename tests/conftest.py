"""Shared fixtures. Tests never touch the network, a GPU or the benchmark data beside the repository: their data
is embedded in the install or made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test models are tiny: one thread beats two (and beats contended ones by far)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_names(tmp_path: Path) -> Path:
    """A small lines-mode file: 200 short made-up names."""
    import random

    rng = random.Random(0)
    syllables = ["ka", "mi", "lo", "ra", "en", "to", "sa", "li", "na", "ve"]
    names = {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)}
    path = tmp_path / "tiny_names.txt"
    path.write_text("\n".join(sorted(names)[:200]) + "\n", encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m lmlab ARGS` on this checkout's sources, as a user would from a shell."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def cli():
    return run_cli
