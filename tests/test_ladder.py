import json
import math

import pytest

from lmlab.errors import ConfigError
from lmlab.ladder import default_rungs, run_ladder
from lmlab.models import REGISTRY
from lmlab.run.folder import load_run
from lmlab.sample import SampleOptions, sample_texts


def test_ladder_end_to_end(cli, tiny_names, tmp_path):
    """Every registered rung trains within a tiny budget into DIR/<model>; table, JSON and plot land in DIR."""
    out = tmp_path / "ladder"
    result = cli("ladder", "--data", str(tiny_names), "--budget", "0.2", "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == default_rungs()
    for row in rows:
        run_dir = out / row["model"]
        assert {"config.json", "tokenizer.json", "model.safetensors", "summary.json"} <= {
            p.name for p in run_dir.iterdir()}
        assert all(math.isfinite(row["nll"][s]) for s in ("train", "val", "test")), row
        summary = json.loads((run_dir / "summary.json").read_text())
        if row["model"] != "ngram":  # the schedule was fitted to the budget, so it ran (about) to its end
            assert summary["planned_steps"] < REGISTRY[row["model"]].train_defaults.get("max_steps", 2000)
            assert row["steps"] <= summary["planned_steps"]
        run = load_run(run_dir)  # each rung reloads from its safetensors and samples
        samples = sample_texts(run, SampleOptions(num_samples=2, max_new_tokens=6, seed=1))
        assert len(samples) == 2 and all(len(s) <= 6 for s in samples)
    # the smoothed counted bigram has finite NLL even where a pair was never seen in training
    assert json.loads((out / "ngram" / "config.json").read_text())["model"]["alpha"] == 1.0
    table = (out / "comparison.txt").read_text()
    assert all(name in table for name in default_rungs()) and table in result.stdout
    assert (out / "val_curves.png").read_bytes()[:4] == b"\x89PNG"

    again = cli("ladder", "--data", str(tiny_names), "--budget", "0.2", "--out", str(out), "--models", "bigram")
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1


def test_ladder_rejects_unknown_rung_and_bad_budget(tiny_names, tmp_path):
    with pytest.raises(ConfigError, match="transformerxl"):
        run_ladder(str(tiny_names), tmp_path, models=["bigram", "transformerxl"])
    with pytest.raises(ConfigError, match="budget"):
        run_ladder(str(tiny_names), tmp_path, budget=0)


def test_default_rungs_are_one_per_architecture():
    rungs = default_rungs()
    assert rungs[:7] == ["ngram", "bigram", "mlp", "wavenet", "rnn", "gru", "lstm"]
    assert len({REGISTRY[name].model_cls for name in rungs}) == len(rungs)
    assert {REGISTRY[name].model_cls for name in rungs} == {spec.model_cls for spec in REGISTRY.values()}
    if "gpt" in REGISTRY:
        assert rungs.index("gpt") > rungs.index("lstm") and "gpt2" not in rungs and "gpt+rope" not in rungs


def test_schedule_is_fitted_to_the_budget():
    from lmlab.config import TrainConfig
    from lmlab.training.budget import PLANNED_SHARE, fit_steps_to_budget

    fitted = fit_steps_to_budget(TrainConfig(max_steps=8000, warmup_steps=100), step_seconds=0.01, budget=60)
    assert fitted.max_steps == int(PLANNED_SHARE * 6000) and fitted.warmup_steps == 100
    roomy = fit_steps_to_budget(TrainConfig(max_steps=2000), step_seconds=0.01, budget=60)
    assert roomy.max_steps == 2000  # never more steps than the rung's own
    short = fit_steps_to_budget(TrainConfig(warmup_steps=100, eval_interval=200), step_seconds=0.1, budget=2)
    assert short.max_steps == 17 and short.warmup_steps == 1 and short.eval_interval == 1


def test_ladder_with_seeds_shows_mean_and_se_and_marks_the_best(tiny_names, tmp_path):
    rows = run_ladder(str(tiny_names), tmp_path / "lad", budget=0.5, models=["ngram", "bigram"], device="cpu",
                      seeds=[1, 2])
    assert [r["seeds"] for r in rows] == [[1, 2], [1, 2]]
    assert (tmp_path / "lad" / "bigram" / "seed-2" / "summary.json").is_file()
    assert rows[1]["nll_se"]["val"] is not None and rows[0]["nll_se"]["val"] == 0  # counts ignore the seed
    assert [r["mark"] for r in rows].count("*") == 1
    assert "±" in (tmp_path / "lad" / "comparison.txt").read_text()
