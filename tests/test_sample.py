"""Sampling batches: how many samples one batch may hold, from the KV cache they need."""

from types import SimpleNamespace

import torch

from lmlab.models.gpt import GPT, GPTConfig
from lmlab.models.llama import Llama, LlamaConfig
from lmlab.models.rnn import GRU, RNNConfig
from lmlab.sample import KV_CACHE_BUDGET, cache_batch_limit


class Sized(torch.nn.Module):
    """A model's sizes without its weights (building GPT-2 here would take seconds)."""

    supports_cache = True

    def __init__(self, **sizes):
        super().__init__()
        self.config = SimpleNamespace(**sizes)
        self.weight = torch.nn.Parameter(torch.zeros(1))


def test_batch_limit_follows_the_kv_cache_a_sample_needs():
    micro = GPT(GPTConfig(preset="gpt-micro", vocab_size=65, block_size=256))
    assert cache_batch_limit(micro) == KV_CACHE_BUDGET // (2 * 4 * 128 * 256 * 4) == 1024
    gpt2 = Sized(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    assert cache_batch_limit(gpt2) == KV_CACHE_BUDGET // (2 * 12 * 768 * 1024 * 4) == 14
    gqa = Sized(n_layer=12, n_head=12, n_embd=768, n_kv_head=4, block_size=1024)
    assert cache_batch_limit(gqa) == KV_CACHE_BUDGET // (2 * 12 * 256 * 1024 * 4) == 42  # a third of the heads
    llama = Llama(LlamaConfig(vocab_size=9, block_size=64, n_layer=2, n_head=4, n_embd=32, n_kv_head=2))
    assert cache_batch_limit(llama) == KV_CACHE_BUDGET // (2 * 2 * 16 * 64 * 4)
    assert cache_batch_limit(GRU(RNNConfig(vocab_size=9, n_embd=4, n_hidden=8))) is None


# -- the command, as a user runs it: from anywhere, into a pipe, under any locale ------------------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def lmlab_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, cwd=cwd, env=environ,
                          timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def accented_run(tmp_path_factory) -> Path:
    """A tiny bigram run trained from a relative path, on names with 'é' (data in its own folder)."""
    root = tmp_path_factory.mktemp("accented")
    (root / "data").mkdir()
    names = ["renée", "josé", "zoé", "anna", "bob", "carla", "dena", "eléa", "noé", "léa"] * 3
    (root / "data" / "names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    done = lmlab_cli("-q", "train", "--data", "names.txt", "--model", "bigram", "--max-steps", "3",
                     "--no-inspect", "--out", str(root / "run"), cwd=root / "data")
    assert done.returncode == 0, done.stderr
    return root / "run"


def test_a_run_samples_from_any_folder_and_without_its_data(accented_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = lmlab_cli("sample", str(accented_run), "-n", "3", cwd=elsewhere)
    assert found.returncode == 0, found.stderr
    assert b"new" in found.stderr and b"novelty not counted" not in found.stderr  # the data, by absolute path
    data = accented_run.parent / "data" / "names.txt"
    data.rename(data.with_suffix(".gone"))
    try:
        alone = lmlab_cli("sample", str(accented_run), "-n", "3", cwd=elsewhere)
    finally:
        data.with_suffix(".gone").rename(data)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == found.stdout  # the same samples; only novelty needs the data
    assert b"novelty not counted: " in alone.stderr and b"no such file" in alone.stderr


def test_sample_into_a_closed_pipe_ends_quietly(accented_run, tmp_path):
    environ = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "sample", str(accented_run), "-n", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, cwd=tmp_path)
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and b"Broken pipe" not in stderr and b"Traceback" not in stderr, stderr


def test_a_stdout_that_cannot_encode_the_samples_gets_escapes(accented_run, tmp_path):
    result = lmlab_cli("sample", str(accented_run), "-n", "20", "--prompt", "é", "--seed", "1", cwd=tmp_path,
                       PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr
    assert b"\\xe9" in result.stdout and b"Traceback" not in result.stderr
    assert b"stdout's encoding is ascii" in result.stderr


def test_a_posix_locale_prompt_is_read_as_utf8(accented_run, tmp_path):
    result = lmlab_cli("sample", str(accented_run), "-n", "2", "--prompt", "é", "--json", cwd=tmp_path,
                       LC_ALL="POSIX", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    assert result.returncode == 0, result.stderr  # not "'\udcc3', '\udca9' not in the vocabulary"
    samples = json.loads(result.stdout)["samples"]
    assert len(samples) == 2 and all(text.startswith("é") for text in samples)
