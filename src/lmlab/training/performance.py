"""Speed on one device: CPU threads that fit the machine, TF32 and bf16 autocast on CUDA, fused AdamW,
optional torch.compile, and the arithmetic behind model FLOPs utilisation (MFU).

Threads (`train.threads=auto`, the default): torch starts one thread per core, which is fastest on an idle
machine and many times slower on a shared one (a step of a 4x4x128 GPT took 803 ms with 2 threads against
180 ms with 1 on a busy 2-core machine: a spinning OpenMP thread waits for a core another job holds).
`ThreadChooser` times a few real training steps at 1 thread and at torch's default (alternating, medians)
and keeps the faster; it measures again when the step time drifts (another job started or ended). The
choice changes the order of floating-point sums, so `auto` runs agree with each other to rounding, not
bitwise: set `train.threads=N` for runs that must reproduce (or resume) bit for bit.

OpenMP's wait policy: threads that finish a parallel region spin for a while before they sleep, which on
a shared core takes time from whoever else runs there. `OMP_WAIT_POLICY=PASSIVE` makes them sleep at once,
but the OpenMP runtime reads it when it loads, i.e. at `import torch`: it can only be set in the
environment of the process (or by the program's entry point before it imports torch), not from here.

MFU follows the PaLM paper's appendix B (as nanoGPT's `estimate_mfu`): a training token costs 6 FLOPs per
parameter (forward 2, backward 4) plus, in attention, 12 * n_layer * n_embd * T for the score and value
products; divide the achieved FLOP rate by the device's peak. The tokens are those a step predicts, so
padding counts for nothing: the rate is useful FLOP/s. A CPU's peak is measured (`cpu_matmul_peak`, one
thread's rate times the threads in use).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections import deque

import torch

log = logging.getLogger(__name__)

# Dense peak FLOP/s (no sparsity) by device-name fragment: bf16 tensor cores, and fp32 with TF32.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; the PCIe card peaks lower (756e12)
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L40S": {"bfloat16": 362e12, "float32": 181e12},
    "A10G": {"bfloat16": 70e12, "float32": 35e12},
    "4090": {"bfloat16": 165e12, "float32": 82.6e12},
}


_BASE_THREADS: int | None = None


def base_threads() -> int:
    """torch's thread count as this process first found it (one per core, or OMP_NUM_THREADS), before any
    choice made here lowered it: the most a chooser tries."""
    global _BASE_THREADS
    if _BASE_THREADS is None:
        _BASE_THREADS = torch.get_num_threads()
    return _BASE_THREADS


def setup_device(device: torch.device, threads: int | str = 0) -> None:
    """CPU threads if a number is asked for ('auto' and 0 leave torch's default; see ThreadChooser); TF32
    for float32 matrix products on CUDA: ~8x the fp32 rate on Ampere and later for a 10-bit mantissa in the
    products, which training does not notice (PyTorch leaves it off)."""
    base_threads()  # remember the default before anything lowers it
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 autocast on a CUDA device that supports it, else float32 (on a CPU without native
    bf16 units, as this project's reference machine, bf16 is slower than fp32)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Matrix products in bf16 while weights, optimizer state and the loss stay in fp32; bf16 has fp32's
    exponent range, so unlike fp16 no loss scaling is needed."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def fused_adamw_available(device: torch.device) -> bool:
    """AdamW's fused kernel updates every parameter in one launch instead of several per tensor."""
    return device.type == "cuda"


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    return torch.compile(model) if enabled else model


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 per parameter, plus attention's score and value products for models
    whose config has n_layer, n_head and n_embd (a transformer). Embedding parameters are counted too, as
    in nanoGPT's estimate, though a lookup costs nothing; for small vocabularies the difference is small."""
    params = sum(p.numel() for p in model.parameters())
    config = getattr(model, "config", None)
    attention = 0.0
    if getattr(config, "n_head", None) and getattr(config, "n_layer", None) and getattr(config, "n_embd", None):
        attention = 12 * config.n_layer * config.n_embd * seq_len
    return 6 * params + attention


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float = 0.0) -> float | None:
    """The device's peak FLOP/s: `train.peak_tflops` if set, else looked up for known GPUs; None otherwise."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = "bfloat16" if dtype == torch.bfloat16 else "float32"
    return next((peaks[key] for fragment, peaks in PEAK_FLOPS.items() if fragment in name), None)


_CPU_MATMUL_PEAK: float | None = None


def cpu_matmul_peak() -> float:
    """One CPU thread's float32 matrix-product rate, FLOP/s: the best of a few 512 x 512 products, measured
    once a process (about 10 ms). What a small model's step is measured against on a CPU, whose peak no
    table gives; on a shared machine it is lower than the idle figure, as the step's own rate is."""
    global _CPU_MATMUL_PEAK
    if _CPU_MATMUL_PEAK is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            own = torch.Generator().manual_seed(0)  # the global generator's draws belong to the run (dropout)
            a, b = torch.randn(512, 512, generator=own), torch.randn(512, 512, generator=own)
            a @ b  # the first product pays for the kernel's set-up
            best = math.inf
            for _ in range(5):
                started = time.perf_counter()
                a @ b
                best = min(best, time.perf_counter() - started)
        finally:
            torch.set_num_threads(threads)
        _CPU_MATMUL_PEAK = 2 * 512**3 / best
    return _CPU_MATMUL_PEAK


# -- threads that fit the machine -------------------------------------------------------------------------


class ThreadChooser:
    """Picks the faster thread count from real training steps, and picks again when the speed drifts.

    Call `before_step()` before each optimizer step and `after_step(seconds)` with its wall time. The first
    `warmup` steps run at the fewest threads and are not timed (lazy initialisation), then each candidate
    runs `rounds` steps, alternating, so a change in load hits all candidates alike; the lowest median
    wins, where more threads must beat fewer by `margin` (fewer threads leave cores to other jobs, and
    lose less when a job starts); a count `hopeless` times slower than the best at its first step is not
    timed again, and counts above the cores the load average leaves free are not timed at all. After
    that, if the median of the last `window` steps moves more than `drift` times away from the winner's
    median (either way), and `min_gap` steps have passed since the last choice, it measures again. Cost:
    `rounds` steps at the slower count per choice.
    """

    def __init__(self, candidates, *, rounds: int = 3, warmup: int = 1, window: int = 30, drift: float = 2.0,
                 min_gap: int = 200, margin: float = 0.1, hopeless: float = 3.0, load=None):
        self.all_candidates = sorted(set(candidates))
        self.candidates = self.all_candidates
        self.hopeless = hopeless
        self._load = load if load is not None else _load_average
        self.rounds, self.window, self.drift, self.min_gap, self.margin = rounds, window, drift, min_gap, margin
        self.chosen: int | None = None
        self.chosen_seconds = 0.0
        self.choices: list[tuple[int, int, dict[int, float]]] = []  # (step count, threads, medians)
        self._recent: deque[float] = deque(maxlen=window)
        self._steps = 0
        self._since_choice = 0
        self._plan: list[tuple[int, bool]] = []
        self._samples: dict[int, list[float]] = {}
        self._measure(warmup)

    @classmethod
    def for_config(cls, threads: int | str, device: torch.device) -> ThreadChooser | None:
        """A chooser when `threads` is 'auto' on a CPU with more than one thread to choose from, else None."""
        if threads != "auto" or device.type != "cpu" or base_threads() <= 1:
            return None
        n = base_threads()
        return cls(sorted({1, n // 2, n} - {0}))

    def _measure(self, warmup: int) -> None:
        # Counts the load average already rules out are not timed: on a busy machine one step at 2 threads
        # cost 13 s against 0.3 s at 1. Our own threads count in the load once we run, so they come off.
        others = self._load() - (torch.get_num_threads() if self.chosen else 0)
        free = max(1, int((os.cpu_count() or self.all_candidates[-1]) - others + 0.5))
        self.candidates = [c for c in self.all_candidates if c <= free] or self.all_candidates[:1]
        # warm-up at the fewest threads: on a busy machine a step at many can cost 10x
        fewest = self.candidates[0]
        self._plan = [(fewest, False)] * warmup + [(c, True) for _ in range(self.rounds) for c in self.candidates]
        if len(self.candidates) == 1:  # nothing to compare: one timed step gives the reference for drift
            self._plan = [(fewest, False)] * warmup + [(fewest, True)]
        self._samples = {c: [] for c in self.candidates}

    @property
    def measuring(self) -> bool:
        return bool(self._plan)

    def before_step(self) -> None:
        threads = self._plan[0][0] if self._plan else self.chosen
        if threads and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def after_step(self, seconds: float) -> None:
        self._steps += 1
        if self._plan:
            threads, timed = self._plan.pop(0)
            if timed:
                self._samples[threads].append(seconds)
                self._drop_hopeless()
            if not self._plan:
                self._choose()
            return
        self._since_choice += 1
        self._recent.append(seconds)
        if len(self._recent) == self.window and self._since_choice >= self.min_gap:
            now = statistics.median(self._recent)
            if not self.chosen_seconds / self.drift <= now <= self.chosen_seconds * self.drift:
                log.info("threads: step time drifted from %.1f to %.1f ms; measuring again",
                         1000 * self.chosen_seconds, 1000 * now)
                self._measure(warmup=0)

    def _drop_hopeless(self) -> None:
        """Stop timing a count whose fastest step is `hopeless` times the best one's: on a busy machine a
        step at 2 threads can take 10x one at 1, and each further trial of it would waste seconds."""
        best = min(min(s) for s in self._samples.values() if s)
        lost = {c for c, s in self._samples.items() if s and min(s) > self.hopeless * best}
        self._plan = [(c, timed) for c, timed in self._plan if c not in lost]

    def _choose(self) -> None:
        medians = {c: statistics.median(s) for c, s in self._samples.items() if s}
        timed = sorted(medians)
        best = timed[0]
        for c in timed[1:]:  # more threads must win clearly
            if medians[c] < medians[best] * (1 - self.margin):
                best = c
        previous, self.chosen, self.chosen_seconds = self.chosen, best, medians[best]
        self._recent.clear()
        self._since_choice = 0
        self.choices.append((self._steps, best, medians))
        timings = ", ".join(f"{c}: {1000 * m:.1f} ms" for c, m in medians.items())
        if previous is None:
            log.info("threads: %d (step time by thread count: %s; train.threads=N fixes it)", best, timings)
        elif previous != best:
            log.info("threads: %d -> %d (%s)", previous, best, timings)
        torch.set_num_threads(best)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not on this platform: assume the cores are free
        return 0.0


def use_fitting_threads(load: float | None = None) -> int:
    """Threads for a short command (sample, eval, lr-find) where timing steps would cost more than it saves:
    torch's default when the cores are free, fewer when the load average says other jobs hold them
    (one thread per core left free, at least one). Sets and returns the count; `load` is for tests."""
    n = base_threads()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not on this platform
            return n
    cores = os.cpu_count() or n
    threads = max(1, min(n, int(cores - load + 0.5)))
    torch.set_num_threads(threads)
    log.debug("threads: %d (load average %.2f on %d cores)", threads, load, cores)
    return threads
