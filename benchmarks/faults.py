"""Faults end to end (issue 13): each case runs `lmlab` as a user would, and the table says what came back:
exit status, the stderr line that names the error (else the first), whether a traceback was printed, and
which files changed (must be none for every refused command).

Cases: a second writer on a run that is training (`--resume`, `--force`), disk full (a small tmpfs: a fresh
run, and a resume whose checkpoint cannot be written), export over a run or a non-empty folder, and resumes
that must fail without touching the run (a non-finite learning rate, a damaged trainer state). A case whose
fix is not merged yet reports what happens today.

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


def lmlab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "lmlab", "-q", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


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
                              "--set", "train.eval_interval=20", "--set", "train.time_budget=300"],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and print its path")
    parser.add_argument("--only", default="resume,export,lock,disk",
                        help="comma-separated groups to run (default: resume,export,lock,disk)")
    args = parser.parse_args()
    groups = {"resume": failed_resume_cases, "export": export_cases, "lock": live_writer_cases,
              "disk": disk_full_cases}
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
