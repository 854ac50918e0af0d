"""The README's TensorBoard screenshot: a short ladder's loss curves on TensorBoard's scalars page.

Trains bigram, MLP and GPT on the embedded names for the same 200 steps (so the rungs share one step axis),
writes them into one TensorBoard folder with `lmlab ladder --tensorboard`, serves it with `tensorboard` on a
free loopback port, photographs the scalars page with headless Chromium and stops TensorBoard again. A minute
or two on one thread (the 90 s budget per rung only caps a slow machine); nothing leaves 127.0.0.1.

    python benchmarks/tensorboard_screenshot.py                   # writes docs/tensorboard_ladder.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The scalars dashboard (not Time Series) takes its tag filter and smoothing from the URL, so the page
# opens on the loss charts alone without clicking.
PAGE = "#scalars&tagFilter=loss&_smoothingWeight=0"
LADDER = ["--models", "bigram,mlp,gpt", "--budget", "90", "--set", "train.threads=1",
          "--set", "train.max_steps=200", "--set", "train.warmup_steps=20", "--set", "train.eval_interval=20"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tensorboard exited with status {server.returncode}")
        try:
            # The run list is filled only once TensorBoard has read the event files: waiting for the index
            # page alone can photograph an empty dashboard.
            with urllib.request.urlopen(url + "data/runs", timeout=2) as r:
                if r.read().strip() not in (b"", b"[]"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"tensorboard did not answer at {url} within {seconds:.0f} s")


def screenshot(chromium: str, url: str, png: Path, wait_ms: int) -> None:
    # TensorBoard is a JavaScript app that fetches its data after load: the virtual-time budget lets it
    # finish fetching and drawing before Chromium takes the picture.
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,900", f"--virtual-time-budget={wait_ms}", f"--screenshot={png}", url],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def check_and_shrink(png: Path, out: Path) -> None:
    """Refuse a blank page (one colour, or nearly); save a palette PNG, a fraction of the size."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    if colours is not None and len(colours) < 50:
        raise SystemExit(f"{png}: only {len(colours)} colours, the page did not render (raise --wait-ms)")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tensorboard_ladder.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--wait-ms", type=int, default=15000, help="virtual time Chromium gives the page")
    parser.add_argument("--keep", type=Path, help="keep the ladder and TensorBoard folders here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="lmlab-tb-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "lmlab", "ladder", "--out", str(work / "ladder"), "--force",
                    "--tensorboard", str(work / "tensorboard"), *LADDER], check=True, env=env)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(["tensorboard", "--logdir", str(work / "tensorboard"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(url, server)
        screenshot(args.chromium, url + PAGE, work / "raw.png", args.wait_ms)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    check_and_shrink(work / "raw.png", args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
