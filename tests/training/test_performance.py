"""Threads that fit the machine: the chooser's decisions on scripted step times (no timing in tests)."""

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


def IDLE() -> float:  # noqa: N802 -- a constant load average
    return 0.0


def drive(chooser: perf.ThreadChooser, seconds_at: dict[int, float], steps: int) -> list[int]:
    """Run `steps` fake steps whose time depends on the thread count in force; returns the counts used."""
    used = []
    for _ in range(steps):
        chooser.before_step()
        used.append(torch.get_num_threads())
        chooser.after_step(seconds_at[torch.get_num_threads()])
    return used


def test_chooser_alternates_then_keeps_the_faster(restore_threads):
    chooser = perf.ThreadChooser([1, 2], load=IDLE, rounds=3, warmup=1)
    used = drive(chooser, {1: 0.18, 2: 0.40}, 7 + 20)
    assert used[:7] == [1, 1, 2, 1, 2, 1, 2]  # warm-up at the fewest threads, then alternating
    assert chooser.chosen == 1 and set(used[7:]) == {1}
    assert chooser.chosen_seconds == pytest.approx(0.18)


def test_a_hopeless_count_is_not_timed_again(restore_threads):
    chooser = perf.ThreadChooser([1, 2], load=IDLE, rounds=3, warmup=1)
    used = drive(chooser, {1: 0.78, 2: 10.0}, 10)
    assert used[:5] == [1, 1, 2, 1, 1] and chooser.chosen == 1  # 2 threads timed once, then dropped


def test_counts_the_load_rules_out_are_not_timed(restore_threads):
    restore_threads.setattr(perf.os, "cpu_count", lambda: 2)
    chooser = perf.ThreadChooser([1, 2], load=lambda: 3.5)
    used = drive(chooser, {1: 0.3, 2: 13.0}, 5)
    assert used == [1] * 5 and chooser.chosen == 1 and chooser.chosen_seconds == 0.3


def test_more_threads_must_win_by_the_margin(restore_threads):
    close = perf.ThreadChooser([1, 2], load=IDLE, margin=0.1)
    drive(close, {1: 0.100, 2: 0.095}, 7)
    assert close.chosen == 1  # 5% faster is within the margin: keep the cores free
    clear = perf.ThreadChooser([1, 2], load=IDLE, margin=0.1)
    drive(clear, {1: 0.100, 2: 0.060}, 7)
    assert clear.chosen == 2


def test_a_drift_in_step_time_measures_again(restore_threads):
    chooser = perf.ThreadChooser([1, 2], load=IDLE, window=10, min_gap=20)
    drive(chooser, {1: 0.10, 2: 0.06}, 7)
    assert chooser.chosen == 2
    drive(chooser, {1: 0.10, 2: 0.07}, 40)  # small changes: no new measurement
    assert len(chooser.choices) == 1
    drive(chooser, {1: 0.20, 2: 0.80}, 20 + 6)  # another job started: 2 threads now lose
    assert len(chooser.choices) == 2 and chooser.chosen == 1


def test_auto_chooses_only_on_a_cpu_with_threads_to_spare(restore_threads):
    restore_threads.setattr(perf, "_BASE_THREADS", 4)
    chooser = perf.ThreadChooser.for_config("auto", torch.device("cpu"))
    assert chooser is not None and chooser.all_candidates == [1, 2, 4]
    assert perf.ThreadChooser.for_config(3, torch.device("cpu")) is None
    assert perf.ThreadChooser.for_config("auto", torch.device("cuda")) is None
    restore_threads.setattr(perf, "_BASE_THREADS", 1)
    assert perf.ThreadChooser.for_config("auto", torch.device("cpu")) is None


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
import lmlab.cli
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
