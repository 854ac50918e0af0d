"""experiments/stats.py against scipy's t-tests, and compare's pairing against benchmarks/ablation.py."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats

from lmlab.compare import difference, summarize, unit_nll
from lmlab.experiments.stats import mean_se, paired_by_seed, paired_by_unit, unpaired_over_seeds
from lmlab.run import train

REPO = Path(__file__).resolve().parents[2]


def test_mean_se():
    found = mean_se([1.0, 2.0, 4.0])
    assert found.mean == pytest.approx(7 / 3)
    assert found.se == pytest.approx(scipy_stats.sem([1.0, 2.0, 4.0]))
    assert mean_se([3.0]).se is None and mean_se([3.0]).format() == "3.0000"


def test_t_tests_agree_with_scipy():
    a, b = [2.10, 2.13, 2.12, 2.15], [2.14, 2.16, 2.13, 2.19]
    paired = paired_by_seed(a, b)
    reference = scipy_stats.ttest_rel(a, b)
    assert paired.p_value == pytest.approx(reference.pvalue)
    assert paired.delta / paired.se == pytest.approx(reference.statistic)
    welch = unpaired_over_seeds(a, b[:3])
    reference = scipy_stats.ttest_ind(a, b[:3], equal_var=False)
    assert welch.p_value == pytest.approx(reference.pvalue)
    assert welch.delta / welch.se == pytest.approx(reference.statistic)
    with pytest.raises(ValueError):
        paired_by_seed([1.0], [2.0])


def test_paired_by_unit_is_the_normal_test_of_the_per_unit_differences():
    gen = torch.Generator().manual_seed(0)
    a = (torch.rand(200, generator=gen) * 5).tolist()
    b = [x + 0.1 + 0.3 * float(torch.randn(1, generator=gen)) for x in a]
    found = paired_by_unit(a, b, tokens=1000)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    assert found.delta == pytest.approx(sum(diffs) / 1000)
    assert found.se == pytest.approx(scipy_stats.tstd(diffs) * math.sqrt(200) / 1000)
    assert found.p_value == pytest.approx(2 * scipy_stats.norm.sf(abs(found.delta / found.se)))
    assert found.significant


def _ablation():
    spec = importlib.util.spec_from_file_location("ablation", REPO / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_compare_pairs_single_runs_as_the_ablation_benchmark_does(tiny_names, tmp_path, mode):
    runs = []
    for name, lr in (("a", 3.0), ("b", 10.0)):
        config = {"data": {"source": str(tiny_names), "mode": mode, "block_size": 16},
                  "model": {"name": "bigram"}, "train": {"max_steps": 15, "lr": lr, "threads": 1}}
        runs.append(train(config, out=tmp_path / name, inspect=False).run_dir.path)
    ablation = _ablation()
    split, sums_a, tokens = ablation.unit_nll(runs[0], 64)
    _, sums_b, _ = ablation.unit_nll(runs[1], 64)
    delta, se, units = ablation.paired_delta((sums_a, tokens), (sums_b, tokens))
    found = difference(summarize(runs[0]), summarize(runs[1]), split, block_tokens=64)
    assert found.method == "paired by evaluation unit" and found.units == units
    assert found.delta == pytest.approx(delta, rel=1e-9) and found.se == pytest.approx(se, rel=1e-9)
    assert unit_nll(runs[0], split, 64)[1] == tokens
