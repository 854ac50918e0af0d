"""The one rule for commands that write a folder (files.claim_output_folder): a new or empty folder, or one
the command owns; never a run it was not given, never a folder inside a run, never through a symbolic link.
Each case checks the one-line refusal (exit 2) and that no file outside the command's own folder changed."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.data.shards import partial_folder
from lmlab.files import (
    LOCK_FILE,
    RUN_CONFIG_FILE,
    RUN_MARKERS,
    DiskFull,
    OutputRefused,
    UnsafePath,
    atomic_write,
    atomic_write_text,
    claim_default_file,
    claim_output_folder,
    is_run_folder,
    open_in_place,
    temporary_path,
)
from lmlab.run.folder import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, RunDir
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



def test_compare_default_plot_never_replaces_a_file_already_there(trained, capsys):
    """The default name is lmlab's choice, not the user's: a val_curves.png of theirs stays, unless --force."""
    pytest.importorskip("matplotlib")
    twin = trained.parent / "twin"
    shutil.copytree(trained, twin)
    theirs = trained.parent / "val_curves.png"
    theirs.write_bytes(b"the user's own figure")
    code, _, err = cli(capsys, "compare", str(trained), str(twin))
    assert code == 0 and "validation curves not written" in err and "exists" in err, err
    assert theirs.read_bytes() == b"the user's own figure"
    assert cli(capsys, "compare", str(trained), str(twin), "--force")[0] == 0
    assert theirs.read_bytes().startswith(b"\x89PNG")
    theirs.write_bytes(b"again the user's")  # a name the user gives is theirs to replace
    assert cli(capsys, "compare", str(trained), str(twin), "--plot", str(theirs))[0] == 0
    assert theirs.read_bytes().startswith(b"\x89PNG")


def test_claim_default_file_refuses_what_is_there_and_inside_a_run(trained, tmp_path):
    assert claim_default_file(tmp_path / "new.png", "x") == tmp_path / "new.png"
    (tmp_path / "old.png").write_text("theirs")
    with pytest.raises(OutputRefused, match="exists; x would replace it; add --force"):
        claim_default_file(tmp_path / "old.png", "x")
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere")  # a dangling link is something there too
    with pytest.raises(OutputRefused, match="exists"):
        claim_default_file(tmp_path / "link.png", "x")
    assert claim_default_file(tmp_path / "old.png", "x", force=True) == tmp_path / "old.png"
    with pytest.raises(OutputRefused, match="is inside the run"):
        claim_default_file(trained / "x.png", "x", force=True)


def test_a_lock_with_a_second_name_is_refused(trained, tmp_path, tiny_names, capsys):
    """The lock is written in place (flock holds an inode): a hard link planted under its name would carry the
    holder's line to the file it shares, so it is refused."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (trained / LOCK_FILE).unlink(missing_ok=True)
    os.link(victim, trained / LOCK_FILE)
    code, _, err = cli(capsys, "train", "--data", str(tiny_names), *QUICK, "--out", str(trained), "--resume",
                       "--max-steps", "4")
    assert code == 2 and err.count("\n") == 1 and "hard link" in err, err
    assert victim.read_text() == "precious\n"


def test_metrics_are_never_appended_to_a_file_with_a_second_name(trained, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (trained / METRICS_FILE).unlink()
    os.link(victim, trained / METRICS_FILE)
    with pytest.raises(UnsafePath, match="hard link"):
        RunDir(trained).append_metric({"step": 7, "loss": 1.0})
    assert victim.read_text() == "precious\n"


def test_open_in_place_refuses_a_hard_link_a_fifo_and_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.link(victim, tmp_path / "hard")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "soft").symlink_to(victim)
    for name, says in (("hard", "hard link"), ("fifo", "named pipe"), ("soft", "symbolic link")):
        with pytest.raises(UnsafePath, match=says):
            open_in_place(tmp_path / name, "a")
    assert victim.read_text() == "precious"
    with open_in_place(tmp_path / "own.jsonl", "a") as fh:  # a new file of its own: written
        fh.write("{}\n")
    assert (tmp_path / "own.jsonl").read_text() == "{}\n"


def test_atomic_write_creates_its_temporary_file_exclusively(tmp_path):
    """A hard link planted at the temporary name is unlinked, never written through."""
    victim, target = tmp_path / "victim", tmp_path / "out.txt"
    victim.write_text("precious")
    os.link(victim, temporary_path(target))
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and victim.read_text() == "precious"


def test_a_full_disk_under_atomic_write_is_one_line_naming_the_path(tmp_path):
    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "kept.txt").write_text("before")
    with pytest.raises(DiskFull, match=r"kept.txt: disk full"):
        atomic_write(tmp_path / "kept.txt", full)
    assert (tmp_path / "kept.txt").read_text() == "before" and len(list(tmp_path.iterdir())) == 1


def test_data_prepare_writes_a_temporary_folder_and_renames_it(tmp_path, tiny_names, capsys, monkeypatch):
    """Killed half-way, `data prepare` leaves .OUT.preparing (named as half-written if used as data), never a
    half-filled OUT; the next prepare starts that temporary folder over."""
    import lmlab.data.shard_writer as writer

    shards = tmp_path / "shards"
    real = writer._write_ids
    monkeypatch.setattr(writer, "_write_ids", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        writer.prepare_shards(writer.PrepareOptions(source=str(tiny_names), out=shards))
    partial = partial_folder(shards)
    assert partial.is_dir() and not shards.exists()
    code, _, err = cli(capsys, "train", "--data", str(partial), *QUICK, "--out", str(tmp_path / "run"))
    assert code == 2 and "half-written prepared-data folder" in err, err
    monkeypatch.setattr(writer, "_write_ids", real)
    assert cli(capsys, "data", "prepare", str(tiny_names), "--out", str(shards))[0] == 0
    assert (shards / "meta.json").is_file() and not partial.exists()
