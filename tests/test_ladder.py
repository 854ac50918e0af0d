import json
import math

import pytest

from lmlab.errors import CheckpointError, ConfigError
from lmlab.ladder import default_rungs, run_ladder
from lmlab.models import REGISTRY
from lmlab.run.folder import load_run
from lmlab.sample import SampleOptions, sample_texts


def test_ladder_end_to_end(cli, tiny_names, tmp_path):
    """Every registered rung trains for a tiny budget into DIR/<model>; table, JSON and plot land in DIR."""
    out = tmp_path / "ladder"
    result = cli("ladder", "--data", str(tiny_names), "--budget", "3e7flops", "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == default_rungs()
    for row in rows:
        run_dir = out / row["model"]
        assert {"config.json", "tokenizer.json", "model.safetensors", "summary.json"} <= {
            p.name for p in run_dir.iterdir()}
        assert all(math.isfinite(row["nll"][s]) for s in ("train", "val", "test")), row
        summary = json.loads((run_dir / "summary.json").read_text())
        if row["model"] != "ngram":  # the budget became the steps, before the run, and it ran them all
            assert summary["budget"]["requested"] == "3e7flops" and row["steps"] == summary["budget"]["steps"]
        run = load_run(run_dir)  # each rung reloads from its safetensors and samples
        samples = sample_texts(run, SampleOptions(num_samples=2, max_new_tokens=6, seed=1))
        assert len(samples) == 2 and all(len(s) <= 6 for s in samples)
    # the smoothed counted bigram has finite NLL even where a pair was never seen in training
    assert json.loads((out / "ngram" / "config.json").read_text())["model"]["alpha"] == 1.0
    table = (out / "comparison.txt").read_text()
    assert all(name in table for name in default_rungs()) and table in result.stdout
    assert "compared at a budget of 3e7flops a rung (sized for it)" in table
    assert (out / "val_curves.png").read_bytes()[:4] == b"\x89PNG"

    again = cli("ladder", "--data", str(tiny_names), "--budget", "3e7flops", "--out", str(out), "--models", "bigram")
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1


def test_ladder_rejects_unknown_rung_and_bad_budget(tiny_names, tmp_path):
    with pytest.raises(ConfigError, match="transformerxl"):
        run_ladder(str(tiny_names), tmp_path, models=["bigram", "transformerxl"])
    for budget in ("0", "60", ""):
        with pytest.raises(ConfigError, match="budget"):
            run_ladder(str(tiny_names), tmp_path, budget=budget)


def test_default_rungs_are_one_per_architecture():
    rungs = default_rungs()
    assert rungs[:7] == ["ngram", "bigram", "mlp", "wavenet", "rnn", "gru", "lstm"]
    assert len({REGISTRY[name].model_cls for name in rungs}) == len(rungs)
    assert {REGISTRY[name].model_cls for name in rungs} == {spec.model_cls for spec in REGISTRY.values()}
    if "gpt" in REGISTRY:
        assert rungs.index("gpt") > rungs.index("lstm") and "gpt2" not in rungs and "gpt+rope" not in rungs


@pytest.mark.parametrize("budget", ["4e10flops", "2e6tokens"])
def test_fair_sizing_gives_every_resizable_rung_the_parameters_its_budget_trains(tiny_names, budget):
    from lmlab.config import parse_budget
    from lmlab.ladder import MIN_STEPS, _steps, fair_size, parameters_for, rung_config
    from lmlab.run.config import merge_layers, resolve_config
    from lmlab.run.data import prepare_data

    parsed = parse_budget(budget)
    target = parameters_for(parsed)
    assert target == (2e6 / 20 if parsed.unit == "tokens" else math.sqrt(4e10 / 120))
    data = None
    for name in ("mlp", "wavenet", "rnn", "lstm", "gpt", "llama", "gpt+gqa"):
        config = resolve_config(rung_config(str(tiny_names), name, budget=budget))
        data = data or prepare_data(config.data)
        values = fair_size(config, data, parsed)
        sized = resolve_config(merge_layers(rung_config(str(tiny_names), name, budget=budget), values))
        from lmlab.ladder import _meta_model

        params = sum(p.numel() for p in _meta_model(sized, data).parameters())
        assert target / 2 < params < target * 2, (name, params)  # a quarter octave of width: well inside 2x
        batch = values["train"]["batch_size"]
        assert _steps(sized, data, parsed) >= MIN_STEPS or batch == 16  # halved until it takes the steps
    bigram = resolve_config(rung_config(str(tiny_names), "bigram", budget="1e12flops"))
    assert fair_size(bigram, data, parse_budget("1e12flops")) == {"train": {"batch_size": 1024, "budget": "",
                                                                             "max_steps": 2000}}
    few = fair_size(bigram, data, parse_budget("2e9flops"))  # a few steps of 1,024: the batch comes down
    assert few["train"]["batch_size"] < 1024 and "max_steps" not in few["train"]
    assert fair_size(bigram, data, parse_budget("1500steps")) == {}  # steps say nothing of size


def test_a_killed_ladder_run_again_keeps_finished_rungs_resumes_the_other_and_gives_the_same_table(
        tiny_names, tmp_path):
    import lmlab
    from lmlab.ladder import rung_config
    from lmlab.training.callbacks import Callback

    class StopAt(Callback):
        name = "stop_at"

        def on_step_end(self, trainer, record):
            if trainer.step >= 15:
                trainer.interrupt()

    options = {"budget": "6e4tokens", "size": "default", "models": ["ngram", "mlp", "rnn"], "device": "cpu",
               "overrides": {"train": {"threads": 1, "eval_interval": 10}}}
    whole = run_ladder(str(tiny_names), tmp_path / "whole", **options)
    killed = tmp_path / "killed"
    run_ladder(str(tiny_names), killed, **{**options, "models": ["ngram", "mlp"]})  # the first rungs finished,
    (killed / "ladder.json").unlink()  # as the killed ladder's own folder, before its table
    for name in ("comparison.json", "comparison.txt", "val_curves.png"):
        (killed / name).unlink()
    finished = (killed / "mlp" / "model.safetensors").stat().st_mtime_ns
    run = lmlab.train(rung_config(str(tiny_names), "rnn", budget="6e4tokens", device="cpu",
                                  overrides=options["overrides"]), out=killed / "rnn", inspect=False,
                      callbacks=[StopAt()])  # the third was killed at step 15
    assert run.trainer.interrupted and not (killed / "rnn" / "summary.json").exists()
    rows = run_ladder(str(tiny_names), killed, **options)
    assert (killed / "mlp" / "model.safetensors").stat().st_mtime_ns == finished  # kept, not trained again
    assert [r["nll"] for r in rows] == [r["nll"] for r in whole]  # the interrupted rung resumed exactly
    assert json.loads((killed / "comparison.json").read_text())[2]["nll"] == \
        json.loads((tmp_path / "whole" / "comparison.json").read_text())[2]["nll"]
    with pytest.raises(CheckpointError, match="--force"):  # another ladder's options: not silently mixed in
        run_ladder(str(tiny_names), killed, **{**options, "budget": "7e4tokens"})


def test_a_rung_that_does_not_beat_the_counted_bigram_gets_a_line_saying_why():
    from lmlab.config import Budget
    from lmlab.ladder import undertrained

    rows = [{"run": "l/ngram", "model": "ngram", "nll": {"test": 2.45}, "steps": 1, "parameters": 0},
            {"run": "l/bigram", "model": "bigram", "nll": {"test": 2.45}, "steps": 900, "parameters": 729,
             "tokens": 1e6},
            {"run": "l/mlp", "model": "mlp", "nll": {"test": 2.0}, "steps": 900, "parameters": 9000, "tokens": 1e6},
            {"run": "l/gpt", "model": "gpt", "nll": {"test": 2.40}, "steps": 60, "parameters": 204_000,
             "tokens": 54_000}]
    for row in rows:
        row["nll"] = {"train": None, "val": None, **row["nll"]}
    lines = undertrained(rows, Budget(1e11, "flops"))
    assert lines == ["gpt: undertrained at this budget (2.4000, not 0.1 below the counted bigram's 2.4500): 54,000 "
                     "tokens for 204,000 parameters; try --budget 4e11flops"]
    rows[3]["nll"]["test"] = 2.06  # beats the bigram, but trails the mlp by more than 0.05
    assert undertrained(rows, Budget(1e11, "flops")) == [
        "gpt: 0.060 behind the best rung (mlp) at this budget: 54,000 tokens for 204,000 parameters; try --budget "
        "4e11flops"]


def test_ladder_with_seeds_shows_mean_and_se_and_marks_the_best(tiny_names, tmp_path):
    rows = run_ladder(str(tiny_names), tmp_path / "lad", budget="2e4tokens", models=["ngram", "bigram"],
                      device="cpu", seeds=[1, 2])
    assert [r["seeds"] for r in rows] == [[1, 2], [1, 2]]
    assert (tmp_path / "lad" / "bigram" / "seed-2" / "summary.json").is_file()
    assert rows[1]["nll_se"]["val"] is not None and rows[0]["nll_se"]["val"] == 0  # counts ignore the seed
    assert [r["mark"] for r in rows].count("*") == 1
    assert "±" in (tmp_path / "lad" / "comparison.txt").read_text()
