"""The `lmlab` command end to end, as a user runs it (subprocesses on tiny data)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lmlab.cli
from lmlab.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_documents_every_command(command, capsys):
    """In this process: a subprocess a command would cost a torch import each (see the one below)."""
    with pytest.raises(SystemExit) as exited:
        main([*([command] if command else []), "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "usage: lmlab" in out
    if command == "train":
        for option in ("--data", "--mode", "--model", "--out", "--max-steps", "--time-budget", "--seed",
                       "--device", "--config", "--set", "--resume"):
            assert option in out


def test_help_from_the_shell(cli):
    result = cli("--help")
    assert result.returncode == 0 and "usage: lmlab" in result.stdout
    assert all(command in result.stdout for command in COMMANDS)


HEAVY = ("torch", "matplotlib", "transformers")


def test_help_imports_no_torch_matplotlib_or_transformers():
    """`lmlab --help` and every `lmlab COMMAND --help` start at once: in one fresh process, the help of each
    command in turn, and the heavy modules looked for after each."""
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from lmlab.cli import COMMANDS, main
        for command in [None, *COMMANDS]:
            with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
                main([*([command] if command else []), "--help"])
            loaded = [m for m in {HEAVY!r} if m in sys.modules]
            if loaded:
                sys.exit(f"{{command or 'lmlab'}} --help imported {{loaded}}")
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(lmlab.cli.__file__).parents[2]))  # this checkout's sources
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr


def test_the_command_listing_shows_whole_first_sentences():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    listed = {choice.dest: choice.help for choice in sub._choices_actions}
    assert set(listed) == set(COMMANDS)
    for name, text in listed.items():
        doc = " ".join(COMMANDS[name][0].__doc__.split())
        assert text.endswith(".") and doc.startswith(text), (name, text)
    assert listed["lr-find"].endswith("suggest a learning rate (valley rule by default).")


def test_an_unknown_command_suggests_the_closest(capsys):
    assert main(["-q", "trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'; did you mean 'train'?" in err and len(err.strip().splitlines()) == 1


def test_a_misspelt_model_suggests_the_closest(capsys):
    assert main(["train", "--model", "gtp", "--max-steps", "1"]) == 2
    assert "unknown model 'gtp'; did you mean 'gpt'?" in capsys.readouterr().err


def test_ctrl_c_while_a_command_starts_is_one_line_and_exit_130(monkeypatch, capsys):
    def starting(args):
        raise KeyboardInterrupt  # as if pressed while torch or the data loads

    monkeypatch.setitem(COMMANDS, "eval", (starting, COMMANDS["eval"][1]))
    assert main(["eval", "some-run"]) == 130
    assert capsys.readouterr().err == "lmlab eval: interrupted\n"

    def parsing():
        raise KeyboardInterrupt

    monkeypatch.setattr(lmlab.cli, "build_parser", parsing)  # before the command is known
    assert main(["eval", "some-run"]) == 130
    assert capsys.readouterr().err == "lmlab: interrupted\n"


def test_train_eval_sample_on_a_tiny_file(cli, tiny_names, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--data", str(tiny_names), "--model", "mlp", "--max-steps", "60", "--out", str(run),
                 "--set", "train.eval_interval=20", "--set", "model.n_hidden=32")
    assert result.returncode == 0, result.stderr
    assert "samples:" in result.stdout and f"run directory: {run}" in result.stdout
    for name in ("config.json", "tokenizer.json", "model.safetensors", "trainer_state.pt", "metrics.jsonl",
                 "summary.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["n_hidden"] == 32 and config["data"]["mode"] == "lines"

    report = json.loads(cli("eval", str(run), "--split", "val", "--json").stdout)
    assert set(report) == {"split", "nll", "perplexity", "bits_per_token", "bits_per_byte", "tokens", "bytes"}
    assert report["bits_per_byte"] == pytest.approx(report["bits_per_token"])  # char tokens on ASCII: 1 byte each
    assert report["nll"] == pytest.approx(json.loads((run / "summary.json").read_text())["nll"]["val"])

    sampled = cli("sample", str(run), "-n", "5", "--prompt", "ka", "--seed", "1", "--json")
    out = json.loads(sampled.stdout)
    assert len(out["samples"]) == 5 and all(s.startswith("ka") for s in out["samples"])
    assert sum(out["novelty"].values()) == 5
    again = json.loads(cli("sample", str(run), "-n", "5", "--prompt", "ka", "--seed", "1", "--json").stdout)
    assert again["samples"] == out["samples"]


def test_stream_mode_on_a_prose_file(cli, tmp_path):
    prose = tmp_path / "prose.txt"
    prose.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    result = cli("train", "--data", str(prose), "--max-steps", "20", "--out", str(tmp_path / "r"),
                 "--set", "data.block_size=16", "--no-inspect")  # the inspector's report is tested elsewhere
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["mode"] == "stream"


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/nonexistent/file.txt"], "no such file"),
    (["train", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--set", "train.lr=fast"], "train.lr: 'fast' is not a float"),
    (["train", "--set", "train.nope=1"], "unknown key train.nope"),
    (["eval", "/nonexistent/run"], "no such run directory"),
    (["sample", "/nonexistent/run"], "no such run directory"),
])
def test_bad_input_is_one_line_and_exit_2(cli, args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_existing_run_is_not_overwritten_without_force(cli, tiny_names, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_names), "--model", "bigram", "--max-steps", "5", "--out", str(run),
            "--no-inspect"]
    assert cli(*args).returncode == 0
    before = (run / "model.safetensors").read_bytes()
    refused = cli(*args)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    assert (run / "model.safetensors").read_bytes() == before
    assert cli(*args, "--force").returncode == 0


def test_resume_from_the_cli_extends_a_run(cli, tiny_names, tmp_path):
    run = tmp_path / "run"
    base = ["train", "--data", str(tiny_names), "--model", "bigram", "--out", str(run), "--no-inspect"]
    assert cli(*base, "--max-steps", "10").returncode == 0
    resumed = cli("train", "--out", str(run), "--resume", "--max-steps", "20")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 20
    changed = cli("train", "--out", str(run), "--resume", "--model", "mlp")
    assert changed.returncode == 2 and "change only train" in changed.stderr
