"""Faults end to end (issue 13): each case runs `lmlab` as a user would, and the table says what came back:
exit status, the stderr line that names the error (else the first), whether a traceback was printed, and
which files changed (must be none for every refused command).

Cases: a second writer on a run that is training (`--resume`, `--force`), disk full (a small tmpfs: a fresh
run, and a resume whose checkpoint cannot be written), export over a run or a non-empty folder, and resumes
that must fail without touching the run (a non-finite learning rate, a damaged trainer state), and issue 35's
(`--only round4`: a user's file beside the runs, hard links, SIGHUP, a removed run folder, deep JSON, foreign
dtypes, newer files, unbounded counts). A case whose fix is not merged yet reports what happens today.

The disk-full cases mount a tmpfs (`mount -t tmpfs -o size=...`), which needs root and a kernel that allows
it; elsewhere they are skipped with a message. The live-writer cases pause the training process (SIGSTOP)
while the second command runs, so every change seen in that window is the second command's.

    PYTHONPATH=src python benchmarks/faults.py [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted({a + b + c for a in ("ka", "mi", "lo", "ve") for b in ("ra", "en", "to", "sa")
                for c in ("", "sa", "li", "na")})
TINY_GPT = ["--model", "gpt", "--set", "model.n_layer=1", "--set", "model.n_embd=16", "--set", "model.n_head=2"]
QUICK = ["--no-inspect", "--set", "train.eval_interval=2"]

rows: list[tuple[str, str, str, str, str]] = []


def lmlab(*args: str, timeout: float = 600, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env)
    return subprocess.run([sys.executable, "-m", "lmlab", "-q", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd, errors="backslashreplace")


def snapshot(*folders: Path) -> dict[str, str]:
    files = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.rglob("*")):
                if p.is_file() and p.name != ".lock":  # the writers' lock: who holds it, not run data
                    files[str(p.relative_to(folder.parent))] = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    return files


def changes(before: dict[str, str], after: dict[str, str]) -> str:
    parts = [f"+{n}" for n in after if n not in before] + [f"-{n}" for n in before if n not in after]
    parts += [f"~{n}" for n in before if n in after and before[n] != after[n]]
    return " ".join(parts) or "none"


def record(case: str, result: subprocess.CompletedProcess | None, changed: str, note: str = "") -> None:
    if result is None:
        rows.append((case, "-", note, "-", "-"))
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "-")
    traceback = "yes" if "Traceback (most recent call last)" in result.stderr else "no"
    rows.append((case, str(result.returncode), first[:150] + (f" ({note})" if note else ""), traceback, changed))
    print(f"  {case}: exit {result.returncode}", file=sys.stderr, flush=True)


def checked(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode:
        raise SystemExit(f"setup failed ({what}):\n{result.stderr}")


def run_case(case: str, watched: list[Path], *args: str, note: str = "") -> subprocess.CompletedProcess:
    before = snapshot(*watched)
    result = lmlab(*args)
    record(case, result, changes(before, snapshot(*watched)), note)
    return result


# -- a second writer on a live run ---------------------------------------------------------------------------

def live_writer_cases(work: Path, data: Path) -> None:
    live = work / "live"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", "lmlab", "-q", "train", "--data", str(data), "--model", "mlp",
                              "--out", str(live), "--seed", "1", "--max-steps", "1000000", "--no-inspect",
                              "--set", "train.eval_interval=20", "--set", "train.budget=300s"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (live / "trainer_state.pt").is_file():  # past start-up: a checkpoint exists
            if first.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the training run did not start: {first.stderr.read().decode()}")
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGSTOP)  # frozen: whatever changes now is the second command's doing
        try:
            run_case("lock: --resume on a run still training", [live], "train", "--out", str(live), "--resume",
                     "--max-steps", "30", "--no-inspect")
            before = snapshot(live)
            seed = json.loads((live / "config.json").read_text())["train"]["seed"]
            result = lmlab("train", "--data", str(data), "--model", "mlp", "--out", str(live), "--force",
                           "--seed", "2", "--max-steps", "3", "--no-inspect")
            after_seed = json.loads((live / "config.json").read_text())["train"]["seed"] \
                if (live / "config.json").is_file() else None
            record("lock: --force on a run still training", result, changes(before, snapshot(live)),
                   f"config seed {seed} -> {after_seed}")
        finally:
            os.kill(first.pid, signal.SIGCONT)
    finally:
        first.kill()  # the training process this script started
        first.wait()


# -- disk full ------------------------------------------------------------------------------------------------

def mount_tmpfs(path: Path, size: str) -> str | None:
    """None when mounted, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip() or "mount failed")


def disk_full_cases(work: Path, data: Path) -> None:
    fresh = work / "full-fresh"
    why = mount_tmpfs(fresh, "1m")
    if why:
        record("disk full: a fresh run (1 MB tmpfs)", None, "-", f"skipped: cannot mount a tmpfs ({why})")
        record("disk full: resume, checkpoint cannot be written", None, "-", "skipped")
        return
    try:
        run_case("disk full: a fresh run (1 MB tmpfs)", [fresh / "run"], "train", "--data", str(data), "--model", "gpt",
                 "--set", "model.n_layer=2", "--set", "model.n_embd=128", "--set", "model.n_head=2", "--max-steps", "2",
                 "--out", str(fresh / "run"), *QUICK)
    finally:
        subprocess.run(["umount", str(fresh)], check=False)

    full = work / "full-resume"
    mount_tmpfs(full, "4m")
    try:
        checked(lmlab("train", "--data", str(data), "--model", "mlp", "--max-steps", "2", "--out", str(full / "run"),
                      *QUICK), "a small run on the tmpfs")
        stat = os.statvfs(full)
        filler = full / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:  # less room than a checkpoint needs
            fh.write(b"\0" * max(stat.f_bavail * stat.f_frsize - 2048, 0))
        run_case("disk full: resume, checkpoint cannot be written", [full / "run"], "train", "--out",
                 str(full / "run"), "--resume", "--max-steps", "6", "--no-inspect")
    finally:
        subprocess.run(["umount", str(full)], check=False)


# -- export over something ------------------------------------------------------------------------------------

def export_cases(work: Path, data: Path) -> None:
    gpt = work / "gpt"
    checked(lmlab("train", "--data", str(data), "--max-steps", "2", "--out", str(gpt), *TINY_GPT, *QUICK),
            "a tiny GPT run")
    itself = work / "gpt-itself"  # a copy: the source of the other cases must stay whole whatever happens here
    shutil.copytree(gpt, itself)
    run_case("export --format hf into the run itself", [itself], "export", str(itself), "--format", "hf",
             str(itself))
    other = work / "other-run"
    shutil.copytree(gpt, other)
    run_case("export --format hf into another run", [gpt, other], "export", str(gpt), "--format", "hf", str(other))
    folder = work / "notes"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}\n')
    (folder / "keep.txt").write_text("my notes\n")
    run_case("export --format hf into a non-empty folder", [folder], "export", str(gpt), "--format", "hf",
             str(folder))
    itself = work / "gpt-itself-onnx"
    shutil.copytree(gpt, itself)
    run_case("export --format onnx into the run itself", [itself], "export", str(itself), "--format", "onnx",
             str(itself))


# -- resumes that must fail without a trace --------------------------------------------------------------------

def failed_resume_cases(work: Path, data: Path) -> None:
    base = work / "base"
    checked(lmlab("train", "--data", str(data), "--model", "mlp", "--max-steps", "4", "--out", str(base), *QUICK),
            "a small MLP run")
    for value in ("inf", "nan"):
        run_case(f"resume with --set train.lr={value}", [base], "train", "--out", str(base), "--resume",
                 "--set", f"train.lr={value}", "--max-steps", "6", "--no-inspect")
    new = work / "new-run"
    run_case("new run with --set train.lr=nan", [new], "train", "--data", str(data), "--out", str(new),
             "--set", "train.lr=nan", "--max-steps", "2", "--no-inspect")
    if new.exists():
        case, code, first, traceback, changed = rows[-1]
        rows[-1] = (case, code, first, traceback, f"{changed} (folder {new.name} left behind)")
    damaged = work / "damaged"
    shutil.copytree(base, damaged)
    state = torch.load(damaged / "trainer_state.pt", weights_only=True)
    state["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    torch.save(state, damaged / "trainer_state.pt")
    run_case("resume with a damaged rng state", [damaged], "train", "--out", str(damaged), "--resume",
             "--max-steps", "6", "--no-inspect")
    bare = work / "bare"
    shutil.copytree(base, bare)
    for name in ("model.safetensors", "trainer_state.pt"):
        (bare / name).unlink()
    run_case("resume before the first checkpoint", [bare], "train", "--out", str(bare), "--resume",
             "--max-steps", "6", "--no-inspect")
    run_case("re-run before the first checkpoint (no --resume)", [bare], "train", "--data", str(data), "--model",
             "mlp", "--out", str(bare), "--max-steps", "6", "--no-inspect")


# -- never lose work, round 3 (issue 25) ------------------------------------------------------------------------

EARLY_STOPPING_GPT = ["--model", "gpt-nano", "--seed", "7", "--set", "train.eval_interval=5",
                      "--set", "train.checkpoint_interval=5", "--set", "train.log_interval=5"]


def same_files(a: Path, b: Path, names: tuple[str, ...]) -> str:
    differ = [n for n in names if not (a / n).is_file() or (a / n).read_bytes() != (b / n).read_bytes()]
    return "identical: " + ", ".join(names) if not differ else "DIFFER: " + ", ".join(differ)


def interrupted_resume_cases(work: Path, data: Path) -> None:
    """Ctrl-C, SIGTERM and kill -9 of the default GPT recipe with early stopping on, resumed, against a run
    never stopped: the files must be byte-identical."""
    straight = work / "es-straight"
    checked(lmlab("train", "--data", str(data), *EARLY_STOPPING_GPT, "--max-steps", "300", "--out", str(straight)),
            "an uninterrupted early-stopping GPT")
    stopped_at = json.loads((straight / "summary.json").read_text())["steps"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        out = work / f"es-{signum.name}"
        args = ["train", "--data", str(data), *EARLY_STOPPING_GPT, "--max-steps", "300", "--out", str(out)]
        proc = subprocess.Popen([sys.executable, "-m", "lmlab", "-q", *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        target = max(stopped_at - 10, 5)  # after the best step, before early stopping ends the run
        while proc.poll() is None:
            try:
                step = torch.load(out / "trainer_state.pt", weights_only=True)["step"]
            except Exception:  # noqa: BLE001 -- not written yet, or being replaced
                step = 0
            if step >= target:
                proc.send_signal(signum)
                break
            time.sleep(0.01)
        proc.wait()
        resumed = lmlab(*args, "--resume")
        record(f"{signum.name} at step ~{target} with early stopping, then --resume", resumed,
               same_files(straight, out, ("model.safetensors", "metrics.jsonl", "config.json")),
               f"first run exit {proc.returncode}")


def folder_rule_cases(work: Path, data: Path) -> None:
    run = work / "r25"
    checked(lmlab("train", "--data", str(data), "--max-steps", "2", "--out", str(run), *TINY_GPT, *QUICK),
            "a tiny GPT run")
    victim = work / "victim.txt"
    victim.write_text("precious\n")
    run_case("data prepare --out RUN", [run], "data", "prepare", str(data), "--out", str(run))
    user = work / "user-model"
    user.mkdir()
    (user / "model.safetensors").write_bytes(b"the user's weights")
    (user / "tokenizer.json").write_text("{}")
    run_case("import DIR --out USERDIR (no config.json)", [user], "import", str(work / "hf-none"), "--out", str(user))
    run_case("data prepare into a non-empty folder", [user], "data", "prepare", str(data), "--out", str(user))
    linked = work / "r25-lock"
    shutil.copytree(run, linked)
    (linked / ".lock").unlink(missing_ok=True)
    (linked / ".lock").symlink_to(victim)
    run_case("RUN/.lock a symlink: train --resume", [linked, victim], "train", "--out", str(linked), "--resume",
             "--max-steps", "4", "--no-inspect")
    run_case("RUN/.lock a symlink: train --force", [linked, victim], "train", "--data", str(data), "--out",
             str(linked), "--force", "--max-steps", "2", *TINY_GPT, *QUICK)
    outside = work / "outside"
    outside.mkdir()
    (outside / "best-step0000002.safetensors").write_text("a user file named like a checkpoint")
    ckdir = work / "r25-ckpt"
    shutil.copytree(run, ckdir)
    shutil.rmtree(ckdir / "checkpoints", ignore_errors=True)
    (ckdir / "checkpoints").symlink_to(outside, target_is_directory=True)
    run_case("RUN/checkpoints a symlink: --resume", [ckdir, outside], "train", "--out", str(ckdir), "--resume",
             "--max-steps", "6", "--no-inspect")
    hf = work / "hf-links"
    checked(lmlab("export", str(run), str(hf)), "an export")
    for p in [p for p in hf.iterdir() if p.is_file()]:
        p.unlink()
        p.symlink_to(victim)
    run_case("export --force into OUT full of symlinks", [victim], "export", str(run), str(hf), "--force")
    run_case("export RUN RUN/hf", [run], "export", str(run), str(run / "hf"))
    run_case("ladder --out RUN", [run], "ladder", "--data", str(data), "--models", "bigram", "--budget", "1",
             "--out", str(run))
    run_case("compare RUN (default plot)", [run], "compare", str(run))


def size_cases(work: Path, data: Path) -> None:
    new = work / "size-new"
    train = ["train", "--data", str(data), "--max-steps", "2", "--out", str(new), "--no-inspect"]
    for case, extra in [
        ("bpe data.vocab_size=1e12", ["--set", "data.tokenizer=bpe", "--set", "data.vocab_size=1e12"]),
        ("gpt model.n_layer=10000", ["--model", "gpt-nano", "--set", "model.n_layer=10000"]),
        ("gpt model.n_embd=1e6", ["--model", "gpt-nano", "--set", "model.n_embd=1000000", "--set", "model.n_head=4"]),
        ("mlp model.n_hidden=1e9", ["--model", "mlp", "--set", "model.n_hidden=1000000000"]),
        ("lstm model.n_hidden=1e6", ["--model", "lstm", "--set", "model.n_hidden=1000000"]),
        ("gpt preset gpt2-xl (memory)", ["--model", "gpt", "--set", "model.preset=gpt2-xl"]),
        ("gpt 64 x 4096 (memory)", ["--model", "gpt", "--set", "model.n_layer=64", "--set", "model.n_embd=4096",
                                    "--set", "model.n_head=32"]),
        ("train.threads=100000", ["--set", "train.threads=100000"]),
        ("ngram model.n=1000000", ["--model", "ngram", "--set", "model.n=1000000"]),
    ]:
        run_case(case, [new], *train, *extra)
    run_case("data prepare --vocab-size 1e12", [work / "size-shards"], "data", "prepare", str(data), "--tokenizer",
             "bpe", "--vocab-size", "1000000000000", "--out", str(work / "size-shards"))
    run = work / "size-run"
    checked(lmlab("train", "--data", str(data), "--model", "mlp", "--max-steps", "2", "--out", str(run), *QUICK),
            "a small MLP run")
    for case, sizes, command in [("config.json block_size 1e12: eval", {"block_size": 10**12}, "eval"),
                                 ("config.json block_size 2e7: eval", {"block_size": 2 * 10**7}, "eval"),
                                 ("config.json n_layer 1e4 x n_embd 1e6: sample", {"n_layer": 10**4, "n_embd": 10**6},
                                  "sample")]:
        edited = work / f"size-{len(rows)}"
        shutil.copytree(run, edited)
        config = json.loads((edited / "config.json").read_text())
        config["model"].update(sizes)
        (edited / "config.json").write_text(json.dumps(config))
        run_case(case, [edited], command, str(edited))
    llama = work / "llama-absurd"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32, "hidden_size": 10**6,
                                                   "num_hidden_layers": 10000, "num_attention_heads": 8}))
    (llama / "model.safetensors").write_bytes(b"\0" * 16)
    (llama / "tokenizer.json").write_text("{}")
    run_case("import a Llama with hidden_size 1e6, 10,000 layers", [work / "llama-run"], "import", str(llama),
             "--out", str(work / "llama-run"))
    run_case("sample --max-new-tokens 1e9", [run], "sample", str(run), "--max-new-tokens", "1000000000")
    run_case("sample --temperature nan", [run], "sample", str(run), "--temperature", "nan")


def run_folder_cases(work: Path, data: Path) -> None:
    home = work / "home"
    (home / "data").mkdir(parents=True)
    names = ["renée", "josé", "zoé", "anna", "bob", "carla", "dena", "eléa", "noé", "léa"] * 3
    (home / "data" / "n.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    run = home / "run"
    checked(lmlab("train", "--data", "n.txt", "--model", "bigram", "--max-steps", "3", "--no-inspect", "--out",
                  str(run), cwd=home / "data"), "a run trained from a relative path")
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    result = lmlab("sample", str(run), "-n", "3", cwd=elsewhere)
    record("sample /abs/RUN from another folder", result, changes({}, {}), "novelty counted" if "new" in
           result.stderr else "")
    (home / "data" / "n.txt").rename(home / "data" / "moved.txt")
    result = lmlab("sample", str(run), "-n", "3", cwd=elsewhere)
    record("sample /abs/RUN, the data moved away", result, "none", "samples printed" if result.stdout else "")
    (home / "data" / "moved.txt").rename(home / "data" / "n.txt")
    result = lmlab("sample", str(run), "-n", "20", "--prompt", "é", cwd=elsewhere, PYTHONIOENCODING="ascii")
    record("sample to an ASCII stdout (PYTHONIOENCODING=ascii)", result, "none", "escaped" if "\\xe9" in
           result.stdout else "")
    result = lmlab("sample", str(run), "-n", "2", "--prompt", "é", cwd=elsewhere, LC_ALL="POSIX", PYTHONUTF8="0",
                   PYTHONCOERCECLOCALE="0")
    record("sample --prompt é under LC_ALL=POSIX", result, "none")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    piped = subprocess.run(f"{sys.executable} -m lmlab sample {run} -n 3000 | head -1", shell=True, env=env,
                           capture_output=True, text=True)
    rows.append(("sample -n 3000 | head -1", "0" if "Broken pipe" not in piped.stderr else "error",
                 (piped.stderr.strip().splitlines() or ["-"])[-1][:150], "no" if "Traceback" not in piped.stderr
                 else "yes", "none"))
    run_case("--resume --max-steps 1 on a run at step 3", [run], "train", "--out", str(run), "--resume",
             "--max-steps", "1")
    # the run's own data changed under it
    (home / "data" / "n.txt").write_text("\n".join(names[::-1] + ["anna"]) + "\n", encoding="utf-8")
    run_case("eval after the data file changed", [run], "eval", str(run))
    u16 = work / "u16.txt"
    u16.write_text("\n".join(names) + "\n", encoding="utf-16")
    run_case("train on a UTF-16 file", [work / "u16-run"], "train", "--data", str(u16), "--out",
             str(work / "u16-run"))
    metrics_run = work / "cut-metrics"
    shutil.copytree(run, metrics_run)
    for name in ("summary.json",):
        if not (metrics_run / name).is_file():
            (metrics_run / name).write_text("{}")
    with open(metrics_run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 99, "val_lo')
    run_case("compare a run whose metrics.jsonl ends cut short", [metrics_run], "compare", str(metrics_run),
             "--plot", "")
    other = work / "other-tokenizer"
    shutil.copytree(run, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["vocab"] = [*tokenizer["vocab"], "#"]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    run_case("sample: weights do not fit the tokenizer", [other], "sample", str(other))
    first = work / "first-ckpt"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "-q", "train", "--data", str(data), "--model", "mlp",
                             "--max-steps", "100000", "--out", str(first), *QUICK], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    while proc.poll() is None and not (first / "trainer_state.pt").exists():  # the first checkpoint's rename
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    run_case("kill -9 at the first checkpoint, then --resume", [first], "train", "--out", str(first), "--resume",
             "--max-steps", "8", "--no-inspect", note="config.json there: " + str((first / "config.json").is_file()))
    a, b = work / "twin-a", work / "twin-b"
    for out in (a, b):
        checked(lmlab("train", "--data", str(data), "--max-steps", "3", "--out", str(out), *TINY_GPT, *QUICK),
                "a tiny GPT run")
    rows.append(("GPT model.safetensors, two runs of one config", "0", "-", "no",
                 same_files(a, b, ("model.safetensors",))))


def round4_cases(work: Path, data: Path) -> None:
    """Issue 35: a user's file beside the runs, a hard-linked lock, SIGHUP, a folder removed mid-run, deep
    JSON, a non-table TOML key, a raw-pickle state, foreign dtypes, newer files, unbounded counts, weights
    that are no file, string sizes, compare of no run, a half-written prepared folder."""
    import pickle  # the hostile input under test

    from safetensors.torch import load_file, save_file

    run = work / "r4" / "run"
    checked(lmlab("train", "--data", str(data), "--model", "mlp", "--max-steps", "4", "--out", str(run), *QUICK),
            "a small MLP run")
    twin = work / "r4" / "twin"
    shutil.copytree(run, twin)
    theirs = work / "r4" / "val_curves.png"
    theirs.write_bytes(b"the user's own figure")
    run_case("compare A B over the user's val_curves.png", [theirs.parent], "compare", str(run), str(twin))
    run_case("compare /no/such/run RUN", [run], "compare", str(work / "no-such-run"), str(run), "--plot", "")
    victim = work / "r4-victim.txt"
    victim.write_text("precious\n")
    linked = work / "r4-lock"
    shutil.copytree(run, linked)
    (linked / ".lock").unlink(missing_ok=True)
    os.link(victim, linked / ".lock")
    run_case("RUN/.lock a hard link: train --resume", [linked, victim], "train", "--out", str(linked), "--resume",
             "--max-steps", "6", "--no-inspect")
    hup = work / "r4-hup"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "-q", "train", "--data", str(data), "--model", "mlp",
                             "--max-steps", "100000", "--out", str(hup), *QUICK], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (hup / "metrics.jsonl").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    rows.append(("SIGHUP while training", str(proc.returncode), (err.strip().splitlines() or ["-"])[-1][:150],
                 "yes" if "Traceback" in err else "no", "checkpoint: " + str((hup / "trainer_state.pt").is_file())))
    gone = work / "r4-gone"
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "-q", "train", "--data", str(data), "--model", "mlp",
                             "--max-steps", "100000", "--out", str(gone), "--no-inspect", "--set",
                             "train.checkpoint_interval=200"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (gone / "metrics.jsonl").exists():
        time.sleep(0.01)
    shutil.rmtree(gone, ignore_errors=True)
    _, err = proc.communicate(timeout=300)
    last = (err.strip().splitlines() or ["-"])[-1][:150]
    rows.append(("run folder removed while training", str(proc.returncode), last,
                 "yes" if "Traceback" in err else "no", "recreated: " + str(gone.exists())))
    deep = "[" * 200_000 + "]" * 200_000
    edited = work / "r4-deep"
    shutil.copytree(run, edited)
    (edited / "config.json").write_text(deep)
    run_case("config.json nested 200k deep: eval", [edited], "eval", str(edited))
    (work / "deep.jsonl").write_text('{"text": "anna"}\n' + deep + "\n")
    run_case("a .jsonl data line nested 200k deep: train", [work / "r4-new"], "train", "--data",
             str(work / "deep.jsonl"), "--out", str(work / "r4-new"))
    (work / "hf-deep").mkdir()
    (work / "hf-deep" / "config.json").write_text(deep)
    run_case("HF config.json nested 200k deep: import", [work / "r4-new"], "import", str(work / "hf-deep"), "--out",
             str(work / "r4-new"))
    (work / "bad.toml").write_text("model = 5\n")
    run_case("--config with model = 5 (TOML)", [work / "r4-new"], "train", "--data", str(data), "--config",
             str(work / "bad.toml"), "--out", str(work / "r4-new"))
    pickled = work / "r4-pickle"
    shutil.copytree(run, pickled)
    (pickled / "trainer_state.pt").write_bytes(pickle.dumps({"step": 4}))
    run_case("raw pickle as trainer_state.pt: --resume", [pickled], "train", "--out", str(pickled), "--resume",
             "--max-steps", "6")
    for dtype in ("int8", "float64"):
        other = work / f"r4-{dtype}"
        shutil.copytree(run, other)
        weights = load_file(str(other / "model.safetensors"))
        save_file({k: v.to(getattr(torch, dtype)) for k, v in weights.items()}, str(other / "model.safetensors"),
                  metadata={"step": "4"})
        run_case(f"{dtype} weights: sample", [other], "sample", str(other))
    newer = work / "r4-newer"
    shutil.copytree(run, newer)
    config = json.loads((newer / "config.json").read_text())
    config["lmlab_version"] = "99.0.0"
    (newer / "config.json").write_text(json.dumps(config))
    run_case("config.json lmlab_version 99.0.0: eval", [newer], "eval", str(newer))
    config["lmlab_version"] = "0.1.0"
    config["model"]["n_hidden"] = str(config["model"]["n_hidden"])
    (newer / "config.json").write_text(json.dumps(config))
    run_case("config.json n_hidden a string: eval", [newer], "eval", str(newer))
    run_case("--seeds 100000000", [work / "r4-new"], "train", "--data", str(data), "--seeds", "100000000", "--out",
             str(work / "r4-new"))
    run_case("forecast --horizon 1e12", [work / "r4-new"], "forecast", "--horizon", "1000000000000", "--out",
             str(work / "r4-new"))
    for kind in ("folder", "fifo", "/dev/zero"):
        odd = work / f"r4-odd-{kind.strip('/').replace('/', '-')}"
        shutil.copytree(run, odd)
        (odd / "model.safetensors").unlink()
        if kind == "folder":
            (odd / "model.safetensors").mkdir()
        elif kind == "fifo":
            os.mkfifo(odd / "model.safetensors")
        else:
            (odd / "model.safetensors").symlink_to("/dev/zero")
        result = lmlab("sample", str(odd), timeout=120)
        record(f"model.safetensors a {kind}: sample", result, "none")
    half = work / "r4-half"
    half.mkdir()
    (half / "train.bin").write_bytes(b"\0\0")
    run_case("a half-written prepared folder as --data", [half], "train", "--data", str(half), "--out",
             str(work / "r4-new"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and print its path")
    parser.add_argument("--only", default="resume,export,lock,disk,interrupt,folders,sizes,runfolder,round4",
                        help="comma-separated groups to run (default: all)")
    args = parser.parse_args()
    groups = {"resume": failed_resume_cases, "export": export_cases, "lock": live_writer_cases,
              "disk": disk_full_cases, "interrupt": interrupted_resume_cases, "folders": folder_rule_cases,
              "sizes": size_cases, "runfolder": run_folder_cases, "round4": round4_cases}
    unknown = set(args.only.split(",")) - set(groups)
    if unknown:
        parser.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(groups)}")
    work = Path(tempfile.mkdtemp(prefix="lmlab-faults-"))
    data = work / "names.txt"
    data.write_text("\n".join(NAMES * 3) + "\n", encoding="utf-8")
    started = time.perf_counter()
    try:
        for name in args.only.split(","):
            groups[name](work, data)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}, {time.perf_counter() - started:.0f} s"
          + (f", scratch {work}" if args.keep else ""))
    print("| case | exit | stderr: the error line (else the first) | traceback | files changed |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")


if __name__ == "__main__":
    main()
