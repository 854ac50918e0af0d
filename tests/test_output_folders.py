"""The one rule for commands that write a folder (files.claim_output_folder): a new or empty folder, or one
the command owns; never a run it was not given, never a folder inside a run, never through a symbolic link.
Each case checks the one-line refusal (exit 2) and that no file outside the command's own folder changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.files import LOCK_FILE, RUN_CONFIG_FILE, RUN_MARKERS, claim_output_folder, is_run_folder
from lmlab.run.folder import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from lmlab.run.folder import LOCK_FILE as RUN_LOCK_FILE
from lmlab.training.checkpoint.format import STATE_FILE

QUICK = ["--model", "gpt", "--set", "model.n_layer=1", "--set", "model.n_embd=8", "--set", "model.n_head=2",
         "--max-steps", "2", "--no-inspect", "--set", "train.eval_interval=1", "--set", "train.batch_size=4"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["-q", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fingerprint(*paths: Path) -> dict[str, str]:
    """Every file under `paths` (links as their target's name), by content."""
    seen = {}
    for root in paths:
        for p in sorted([root, *root.rglob("*")] if root.is_dir() else [root]):
            if p.is_symlink():
                seen[str(p)] = f"-> {p.readlink()}"
            elif p.is_file():
                seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return seen


@pytest.fixture
def trained(tmp_path, tiny_names, capsys) -> Path:
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", str(tiny_names), *QUICK, "--out", str(run))
    assert code == 0, err
    return run


def test_the_rule_names_its_run_files_as_the_run_folder_does():
    assert set(RUN_MARKERS) == {STATE_FILE, METRICS_FILE, SUMMARY_FILE}
    assert (RUN_CONFIG_FILE, LOCK_FILE) == (CONFIG_FILE, RUN_LOCK_FILE)


def test_claim_accepts_new_empty_and_owned_folders_and_refuses_the_rest(tmp_path):
    assert claim_output_folder(tmp_path / "new", "x") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    claim_output_folder(tmp_path / "empty", "x")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user's")
    with pytest.raises(Exception, match="is not empty"):
        claim_output_folder(mine, "x")
    claim_output_folder(mine, "x", may_replace=lambda folder: True)
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match="is a file"):
        claim_output_folder(tmp_path / "file", "x")
    # pytest's own base folder holds a .lock: a lock file alone does not make a run
    (tmp_path / LOCK_FILE).write_text("")
    assert not is_run_folder(tmp_path)


def test_data_prepare_refuses_a_run_and_a_non_empty_folder(trained, tmp_path, tiny_names, capsys):
    before = fingerprint(trained)
    code, _, err = cli(capsys, "data", "prepare", str(tiny_names), "--out", str(trained))
    assert code == 2 and err.count("\n") == 1 and "is a run directory" in err, err
    code, _, err = cli(capsys, "data", "prepare", str(tiny_names), "--out", str(trained / "shards"))
    assert code == 2 and "is inside the run" in err, err
    assert fingerprint(trained) == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "train.bin").write_bytes(b"user's")
    code, _, err = cli(capsys, "data", "prepare", str(tiny_names), "--out", str(busy))
    assert code == 2 and "is not empty" in err and (busy / "train.bin").read_bytes() == b"user's"
    # an earlier prepared folder is its own: prepared again in place
    shards = tmp_path / "shards"
    assert cli(capsys, "data", "prepare", str(tiny_names), "--out", str(shards))[0] == 0
    assert cli(capsys, "data", "prepare", str(tiny_names), "--out", str(shards))[0] == 0


def test_data_prepare_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, tiny_names, capsys):
    shards, victim = tmp_path / "shards", tmp_path / "victim.txt"
    assert cli(capsys, "data", "prepare", str(tiny_names), "--out", str(shards))[0] == 0
    victim.write_text("precious")
    for name in ("train.bin", "tokenizer.json"):
        (shards / name).unlink()
        (shards / name).symlink_to(victim)
    assert cli(capsys, "data", "prepare", str(tiny_names), "--out", str(shards))[0] == 0
    assert victim.read_text() == "precious"
    assert not (shards / "train.bin").is_symlink() and not (shards / "tokenizer.json").is_symlink()


def test_import_refuses_a_user_folder_without_a_config(tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "model.safetensors").write_bytes(b"user's weights")
    (user / "tokenizer.json").write_text("{}")
    before = fingerprint(user)
    code, _, err = cli(capsys, "import", str(tmp_path / "no-such-hf"), "--out", str(user))
    assert code == 2 and "is not empty" in err, err  # refused before the HF folder is even read
    assert fingerprint(user) == before


def test_train_refuses_a_non_empty_folder_that_is_not_a_run(tmp_path, tiny_names, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "model.safetensors").write_bytes(b"user's weights")
    before = fingerprint(user)
    code, _, err = cli(capsys, "train", "--data", str(tiny_names), *QUICK, "--out", str(user), "--force")
    assert code == 2 and "is not empty" in err, err
    assert fingerprint(user) == before


def test_a_lock_that_is_a_link_is_refused_and_its_target_kept(trained, tmp_path, tiny_names, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (trained / ".lock").unlink(missing_ok=True)
    (trained / ".lock").symlink_to(victim)
    before = fingerprint(trained)
    for extra in (["--resume", "--max-steps", "4"], ["--force"]):
        code, _, err = cli(capsys, "train", "--data", str(tiny_names), *QUICK, "--out", str(trained), *extra)
        assert code == 2 and err.count("\n") == 1 and "symbolic link" in err, err
    assert victim.read_text() == "precious" and fingerprint(trained) == before


def test_a_checkpoints_folder_that_is_a_link_is_refused(trained, tmp_path, tiny_names, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "best-step0000001.safetensors").write_text("user's file named like a checkpoint")
    (trained / "checkpoints").rename(tmp_path / "old-checkpoints") if (trained / "checkpoints").exists() else None
    (trained / "checkpoints").symlink_to(outside, target_is_directory=True)
    before = fingerprint(outside)
    code, _, err = cli(capsys, "train", "--out", str(trained), "--resume", "--max-steps", "4")
    assert code == 2 and "symbolic link" in err, err
    assert fingerprint(outside) == before


def test_export_force_replaces_links_in_out_and_refuses_a_folder_inside_a_run(trained, tmp_path, capsys):
    pytest.importorskip("transformers")
    out, victim = tmp_path / "hf", tmp_path / "victim.txt"
    assert cli(capsys, "export", str(trained), str(out))[0] == 0
    victim.write_text("precious")
    links = [p for p in out.iterdir() if p.is_file()]
    for p in links:
        p.unlink()
        p.symlink_to(victim)
    assert cli(capsys, "export", str(trained), str(out), "--force")[0] == 0
    assert victim.read_text() == "precious"
    assert not any(p.is_symlink() for p in links)
    before = fingerprint(trained)
    code, _, err = cli(capsys, "export", str(trained), str(trained / "hf"))
    assert code == 2 and "is inside the run" in err, err
    assert fingerprint(trained) == before


def test_ladder_refuses_a_run_as_its_folder(trained, tiny_names, capsys):
    before = fingerprint(trained)
    code, _, err = cli(capsys, "ladder", "--data", str(tiny_names), "--models", "bigram", "--budget", "1e6flops",
                       "--out", str(trained))
    assert code == 2 and "is a run directory" in err, err
    assert fingerprint(trained) == before


def test_compare_writes_its_default_plot_beside_the_run_never_into_it(trained, capsys):
    pytest.importorskip("matplotlib")
    before = fingerprint(trained)
    code, _, err = cli(capsys, "compare", str(trained))
    assert code == 0, err
    assert fingerprint(trained) == before
    assert (trained.parent / "run-val_curves.png").is_file()
    code, _, err = cli(capsys, "compare", str(trained), "--plot", str(trained / "curves.png"))
    assert code == 2 and "is inside the run" in err and fingerprint(trained) == before

