"""`lmlab export` and `lmlab import` through the CLI's own entry point (in-process, so no interpreter start-up):
files written, one-line refusals, and an imported run that evaluates, samples and fine-tunes."""

from __future__ import annotations

import json

import pytest

from lmlab.cli import main

pytest.importorskip("transformers")

TINY_GPT = ["--set", "model.n_layer=1", "--set", "model.n_embd=16", "--set", "model.n_head=2"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["-q", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_import_eval_sample_finetune(tmp_path, tiny_names, capsys):
    run, hf, back = tmp_path / "run", tmp_path / "hf", tmp_path / "back"
    code, _, err = cli(capsys, "train", "--data", str(tiny_names), "--model", "gpt", "--max-steps", "3",
                       "--out", str(run), *TINY_GPT)
    assert code == 0, err
    code, out, err = cli(capsys, "export", str(run), "--format", "hf", str(hf))
    assert code == 0, err
    assert "AutoModelForCausalLM" in out
    config = json.loads((hf / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_layer"] == 1 and config["n_embd"] == 16

    code, out, err = cli(capsys, "import", str(hf), "--out", str(back), "--data", str(tiny_names))
    assert code == 0, err
    nll = [json.loads(cli(capsys, "eval", str(r), "--json")[1])["nll"] for r in (run, back)]
    assert nll[0] == pytest.approx(nll[1], abs=1e-5)
    code, out, _ = cli(capsys, "sample", str(back), "-n", "3", "--json")
    assert code == 0 and len(json.loads(out)["samples"]) == 3
    code, _, err = cli(capsys, "train", "--out", str(back), "--resume", "--max-steps", "2")
    assert code == 0, err
    assert json.loads((back / "summary.json").read_text())["steps"] == 2


def test_export_refuses_an_mlp_run_in_one_line(tmp_path, tiny_names, capsys):
    run = tmp_path / "mlp"
    assert cli(capsys, "train", "--data", str(tiny_names), "--model", "mlp", "--max-steps", "2",
               "--out", str(run))[0] == 0
    code, _, err = cli(capsys, "export", str(run), str(tmp_path / "hf"))
    assert code == 2
    assert err.count("\n") == 1 and "'mlp' model cannot be expressed as GPT-2" in err


def test_import_of_a_missing_directory_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "import", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1 and "config.json is missing" in err


def test_import_will_not_overwrite_a_run(tmp_path, tiny_names, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--data", str(tiny_names), "--model", "gpt", "--max-steps", "1", "--out", str(run),
               *TINY_GPT)[0] == 0
    assert cli(capsys, "export", str(run), str(tmp_path / "hf"))[0] == 0
    code, _, err = cli(capsys, "import", str(tmp_path / "hf"), "--out", str(run))
    assert code == 2 and "already holds a run" in err
