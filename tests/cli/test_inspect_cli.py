"""`lmlab train` writes and prints findings, `lmlab inspect` shows them again, `lmlab lr-find` suggests a rate."""

from __future__ import annotations

import json

from lmlab.cli import main

SMALL = ["--model", "mlp", "--set", "model.n_hidden=16", "--set", "model.n_embd=4", "--set", "train.batch_size=16"]


def test_train_prints_findings_and_inspect_repeats_them(cli, tiny_names, tmp_path, capsys):
    out = tmp_path / "run"
    done = cli("train", "--data", str(tiny_names), "--max-steps", "40", "--inspect-every", "5", "--out", str(out),
               "--set", "train.lr=1e-7", *SMALL)
    assert done.returncode == 0, done.stderr
    assert "[warning]" in done.stdout and "learning rate looks much too low" in done.stdout
    for name in ("findings.json", "report.html", "inspect.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "findings.json").read_text())
    assert "lr_too_low" in {f["rule"] for f in saved}
    assert json.loads((out / "summary.json").read_text())["inspector"] == "on"
    shown = cli("inspect", str(out), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) == saved
    assert main(["inspect", str(out), "--report"]) == 0 and "too low" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "not an lmlab run" in capsys.readouterr().err


def test_no_inspect_and_lr_find(cli, tiny_names, tmp_path, capsys):
    out = tmp_path / "run"
    done = cli("train", "--data", str(tiny_names), "--max-steps", "5", "--no-inspect", "--out", str(out), *SMALL,
               "--early-stopping", "3", "--reduce-lr-on-plateau", "2", "--save-top-k", "1")
    assert done.returncode == 0, done.stderr
    assert not (out / "findings.json").exists() and "inspector" not in done.stdout
    kept = {p.name for p in (out / "checkpoints").iterdir()}
    # the last and the single best (--save-top-k 1), and early stopping's best, kept for a resume
    top = {k for k in kept if k.startswith("step0000005-val_loss")}
    assert kept == {"last.safetensors", "best-step0000005.safetensors", *top} and len(top) == 1
    # lmlab inspect says why there is nothing to show, from what the run recorded, never a guess
    assert json.loads((out / "summary.json").read_text())["inspector"] == "off: inspect=False"
    assert main(["inspect", str(out)]) == 2
    assert "turned off for this run (inspect=False: `lmlab train --no-inspect`, and `lmlab ladder`" in \
        capsys.readouterr().err
    (out / "summary.json").unlink()
    assert main(["inspect", str(out)]) == 2 and "has not finished" in capsys.readouterr().err
    plot = tmp_path / "runs" / "lr_find.png"  # the default: beside the runs, not in the current folder
    found = cli("lr-find", "--data", str(tiny_names), "--json", *SMALL, "--num-iter", "30", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["rule"] == "valley" and 1e-7 <= result["suggestion"] <= 10 and plot.is_file()
    assert {p.name for p in tmp_path.iterdir()} == {"run", "runs", "tiny_names.txt"}
    plot.write_bytes(b"the user's plot")  # a default name never replaces what is there (--force does)
    again = cli("lr-find", "--data", str(tiny_names), *SMALL, "--num-iter", "3", cwd=tmp_path)
    assert again.returncode == 0 and "plot not written" in again.stderr and "--force" in again.stderr, again.stderr
    assert plot.read_bytes() == b"the user's plot"
    bad = cli("lr-find", "--data", str(tiny_names), "--model", "ngram")
    assert bad.returncode == 2 and "counted" in bad.stderr


def test_log_lines_do_not_break_the_progress_bar():
    import io
    import logging

    from tqdm import tqdm

    from lmlab.cli import TqdmLogHandler

    stream = io.StringIO()
    log = logging.getLogger("lmlab.test_progress")
    log.propagate, log.level = False, logging.INFO
    handler = TqdmLogHandler(stream)
    log.addHandler(handler)
    try:
        with tqdm(total=10, desc="train", file=stream, mininterval=0) as bar:
            bar.update(1)
            log.info("effective batch: 32 sequences")
            bar.update(1)
    finally:
        log.removeHandler(handler)
    lines = [line.rsplit("\r", 1)[-1] for line in stream.getvalue().split("\n")]
    assert "effective batch: 32 sequences" in lines  # on a line of its own, not after the bar
