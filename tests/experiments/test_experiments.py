"""Seed groups (train --seeds), paired comparisons of groups, and a named experiment's reading."""

import json
import re

import pytest

from lmlab.cli import main
from lmlab.compare import compare_runs, difference, format_table
from lmlab.experiments.groups import GROUP_FILE, parse_seeds
from lmlab.experiments.named import EXPERIMENTS, run_experiment


def test_parse_seeds():
    assert parse_seeds("3", 1337) == [1337, 1338, 1339]
    assert parse_seeds("5,2", 0) == [5, 2]
    for bad in ("0", "a", "1,1", "-1,2"):
        with pytest.raises(Exception, match="seeds"):
            parse_seeds(bad, 0)


def test_train_seeds_makes_a_group_whose_table_shows_mean_and_se(tiny_names, tmp_path, capsys):
    args = ["train", "--data", str(tiny_names), "--model", "bigram", "--max-steps", "10", "--no-inspect"]
    assert main(["-q", *args, "--seeds", "2", "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert json.loads((tmp_path / "a" / GROUP_FILE).read_text())["seeds"] == [1337, 1338]
    per_seed = [json.loads((tmp_path / "a" / f"seed-{s}" / "summary.json").read_text())["nll"]["val"]
                for s in (1337, 1338)]
    assert per_seed[0] != per_seed[1]  # only the seed differs, and it matters
    row = compare_runs([tmp_path / "a"])[0]
    assert row["nll"]["val"] == pytest.approx(sum(per_seed) / 2)
    assert row["nll_se"]["val"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
    assert re.search(r"\d\.\d{4}±\d\.\d{4}", table)
    kept = (tmp_path / "a" / "seed-1337" / "summary.json").stat().st_mtime_ns
    assert main(["-q", *args, "--seeds", "2", "--out", str(tmp_path / "a")]) == 0  # run again: kept
    assert (tmp_path / "a" / "seed-1337" / "summary.json").stat().st_mtime_ns == kept
    assert main(["-q", *args, "--seeds", "2", "--out", str(tmp_path / "b"), "--set", "train.lr=1"]) == 0
    rows = compare_runs([tmp_path / "b", tmp_path / "a"])
    found = difference(rows[0], rows[1], "val")
    assert found.method == "paired by seed" and found.units == 2
    assert "±" in format_table(rows)
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "a"), "--plot", str(tmp_path / "c.png")]) == 0
    printed = capsys.readouterr().out
    assert "paired by seed" in printed and f"a - b = {-found.delta:+.4f}" in printed  # each against the first


def test_a_named_experiment_reads_its_own_numbers(tiny_names, tmp_path):
    result = run_experiment("init-scale", tmp_path / "exp", data=str(tiny_names), seeds="2", scale=0.05)
    rows = result["rows"]
    assert len(rows) == 3 and (tmp_path / "exp" / "sweep.png").is_file()
    best = rows[0]
    assert f"output_scale={best['value']}" in result["reading"] and f"{best['mean']:.3f}" in result["reading"]
    assert all(f"{r['mean']:.3f}" in result["reading"] for r in rows)
    assert ("holds" in result["reading"]) or ("neither confirms nor refutes" in result["reading"])
    assert set(EXPERIMENTS) == {"batch-size", "lr", "init-scale", "norm", "dropout", "attention-scaling",
                                "residual", "scaling"}
