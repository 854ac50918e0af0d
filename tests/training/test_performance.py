"""Threads: train.threads=auto chosen from the work, short commands from the load (no timing in tests)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.errors import ConfigError
from lmlab.training import performance as perf


@pytest.fixture
def restore_threads(monkeypatch):
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)


def test_auto_threads_follow_the_work_never_the_load(restore_threads):
    restore_threads.setattr(perf, "_BASE_THREADS", 4)
    restore_threads.setattr(perf.os, "getloadavg", lambda: (12.0, 12.0, 12.0))  # a busy machine changes nothing
    cpu = torch.device("cpu")
    assert perf.setup_device(cpu, "auto", perf.AUTO_THREADS_MIN_FLOPS / 10) == 1 and torch.get_num_threads() == 1
    assert perf.setup_device(cpu, "auto", perf.AUTO_THREADS_MIN_FLOPS * 10) == 4 and torch.get_num_threads() == 4
    assert perf.setup_device(cpu, 3, 1.0) == 3 and perf.setup_device(cpu, 0, 1.0) == 4


def test_fitting_threads_follow_the_load(restore_threads):
    restore_threads.setattr(perf, "_BASE_THREADS", 2)
    restore_threads.setattr(perf.os, "cpu_count", lambda: 2)
    assert perf.use_fitting_threads(load=0.2) == 2
    assert perf.use_fitting_threads(load=2.1) == 1 and torch.get_num_threads() == 1
    assert perf.use_fitting_threads(load=7.0) == 1


def test_threads_config_takes_auto_or_a_count():
    assert TrainConfig().threads == "auto"
    assert TrainConfig(threads=0).threads == 0 and TrainConfig(threads=2).threads == 2
    with pytest.raises(ConfigError, match="train.threads"):
        TrainConfig(threads=-1)


@pytest.mark.parametrize(("load", "user", "expected"), [(5.0, None, "PASSIVE"), (0.1, None, None),
                                                         (5.0, "ACTIVE", "ACTIVE")])
def test_the_command_sets_openmps_wait_policy_from_the_load_before_torch_loads(load, user, expected):
    # Spinning waits are fastest on free cores and steal shared ones: the entry point picks before torch
    # loads (OpenMP reads the policy once), and a user's own setting wins.
    from lmlab.cli import openmp_wait_policy

    assert openmp_wait_policy(3.0, {"GOMP_SPINCOUNT": "1000"}) is None
    spy = f"""
import os, sys
os.getloadavg = lambda: ({load}, 0.0, 0.0)
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
sys.meta_path.insert(0, Spy())
import lmlab.cli  # the entry point: it imports no torch itself (help starts at once); a command does, later
import torch
print(seen)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if user:
        env["OMP_WAIT_POLICY"] = user
    done = subprocess.run([sys.executable, "-c", spy], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == repr([expected])


def test_measuring_the_cpu_peak_leaves_the_global_generator_alone():
    from lmlab.training import performance as perf

    perf._CPU_MATMUL_PEAK = None
    before = torch.get_rng_state()
    assert perf.cpu_matmul_peak() > 1e8
    assert torch.equal(torch.get_rng_state(), before)  # a resumed run draws dropout as the straight one did
