import json
import math

import pytest

from lmlab.compare import compare_runs, format_table, plot_val_curves, summarize_run, to_json
from lmlab.errors import CheckpointError
from lmlab.evaluate import evaluate_run
from lmlab.ladder import run_ladder
from lmlab.run.folder import load_run


@pytest.fixture
def tiny_runs(tiny_names, tmp_path):
    """Two real, tiny runs (a counted bigram and a few steps of the neural one) in one ladder folder."""
    out = tmp_path / "ladder"
    run_ladder(str(tiny_names), out, budget="2e4tokens", models=["ngram", "bigram"], device="cpu")
    return [out / "ngram", out / "bigram"]


def test_rows_agree_with_lmlab_eval(tiny_runs):
    rows = compare_runs(tiny_runs)
    assert [r["model"] for r in rows] == ["ngram", "bigram"]
    for row, run_dir in zip(rows, tiny_runs, strict=False):
        run = load_run(run_dir)
        for split in ("train", "val", "test"):
            assert row["nll"][split] == pytest.approx(evaluate_run(run, split)["nll"], rel=1e-6)
        assert row["bits_per_char"] == pytest.approx(row["nll"]["test"] / math.log(2))
        assert row["parameters"] == sum(p.numel() for p in run.model.parameters())
        assert row["val_curve"] and all(isinstance(s, int) for s, _ in row["val_curve"])
    assert rows[0]["parameters"] == 0  # counts are a buffer, not parameters
    assert len(rows[0]["val_curve"]) == 1  # counted once


def test_text_json_and_plot(tiny_runs, tmp_path):
    rows = compare_runs(tiny_runs)
    table = format_table(rows)
    header, rule, first, second = table.splitlines()[:4]
    assert header.split() == ["run", "model", "params", "steps", "tokens", "train", "val", "test", "bits/char",
                              "bits/byte", "tokens/s", "seconds"]
    assert set(rule) <= {"-", " "}
    assert first.split()[:2] == ["ngram", "ngram"]
    assert f"{rows[1]['nll']['val']:.4f}" in second
    assert json.loads(to_json(rows))[1]["nll"] == rows[1]["nll"]
    png = plot_val_curves(rows, tmp_path / "plots" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    timed = plot_val_curves(rows, tmp_path / "plots" / "timed.png", x="time")  # wall time on x
    assert timed.read_bytes() != png.read_bytes()


def test_unfinished_or_missing_run_is_a_clear_error(tiny_runs, tmp_path):
    (tiny_runs[1] / "summary.json").unlink()
    with pytest.raises(CheckpointError, match="did not finish"):
        summarize_run(tiny_runs[1])
    with pytest.raises(CheckpointError, match="no such run"):
        summarize_run(tmp_path / "nope")


def test_compare_cli(tiny_runs, cli, tmp_path):
    png = tmp_path / "c.png"
    result = cli("compare", *map(str, tiny_runs), "--json", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert [r["model"] for r in json.loads(result.stdout)] == ["ngram", "bigram"]
    assert png.is_file()
    # Without --plot the PNG goes beside the runs (the ladder folder holding both), not into the current folder.
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (tiny_runs[0].parent / "val_curves.png").unlink(missing_ok=True)  # the ladder's own
    result = cli("compare", *map(str, tiny_runs), "--json", "--x", "time", cwd=cwd)
    assert result.returncode == 0 and not list(cwd.iterdir())
    assert (tiny_runs[0].parent / "val_curves.png").is_file()
    bad = cli("compare", str(tmp_path / "nope"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such run" in bad.stderr


def test_a_metrics_line_cut_short_at_the_end_is_skipped(tiny_runs):
    """What a kill mid-write leaves: the last line without its end. A bad line elsewhere is still an error."""
    metrics = tiny_runs[1] / "metrics.jsonl"
    whole = metrics.read_text()
    full = compare_runs([tiny_runs[1]])[0]["val_curve"]
    metrics.write_text(whole + '{"step": 99, "val_lo')
    assert compare_runs([tiny_runs[1]])[0]["val_curve"] == full
    metrics.write_text('{"step": 1, "lo\n' + whole)
    with pytest.raises(CheckpointError, match=":1: not a JSON record"):
        summarize_run(tiny_runs[1])


def test_an_imported_run_is_called_imported_not_unfinished(tmp_path):
    """An import (a model made elsewhere, at step 0) has no summary; --resume would fine-tune it."""
    from lmlab.run.config import build_model, resolve_config
    from lmlab.run.folder import RunDir
    from lmlab.tokenizers import CharTokenizer

    config = resolve_config({"model": {"name": "bigram"}})
    tokenizer = CharTokenizer.fit(["ab", "ba"])
    imported = RunDir(tmp_path / "imported")
    imported.create_untrained(config, tokenizer, build_model(config, tokenizer, 8))
    with pytest.raises(CheckpointError, match="an imported model") as raised:
        summarize_run(imported.path)
    assert "--resume" not in str(raised.value) and "did not finish" not in str(raised.value)


def test_a_run_stopped_before_its_first_step_is_not_called_imported(tiny_names, tmp_path):
    """A checkpoint the trainer saves at step 0 (a stop before the first step) holds its optimizer: with its
    summary gone, the run is unfinished, not imported."""
    import lmlab
    from lmlab.training.callbacks import Callback

    class StopAtOnce(Callback):
        def on_train_begin(self, trainer):
            trainer.stop()

    run = lmlab.train({"data": {"source": str(tiny_names)}, "model": {"name": "bigram"}}, out=tmp_path / "run",
                      inspect=False, callbacks=[StopAtOnce()])
    assert run.trainer.step == 0
    (tmp_path / "run" / "summary.json").unlink()
    with pytest.raises(CheckpointError, match="did not finish"):
        summarize_run(tmp_path / "run")
