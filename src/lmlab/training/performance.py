"""Speed on one device: CPU threads that fit the machine, TF32 and bf16 autocast on CUDA, fused AdamW,
optional torch.compile, and the arithmetic behind model FLOPs utilisation (MFU).

Threads (`train.threads=auto`, the default): one for a small step, one per core for a large one, chosen from
the step's FLOPs, never from the machine's load: the thread count changes the order of floating-point sums,
so a choice that followed the load would make two runs of one config differ. On a shared machine more
threads than free cores cost time (a spinning OpenMP thread waits for a core another job holds), never
numbers; `train.threads=N` sets the count.

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
import time

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


# train.threads=auto: a step of fewer FLOPs than this (every rung at its default size up to gpt-micro) runs on
# one thread, a larger one on every core torch found. On an idle 2-core machine a second thread is 1.1-1.7x
# faster for these steps; on a busy one it is many times slower (it waits for a core another job holds), and
# one thread gives the same bits on a machine of any core count (benchmarks/RESULTS.md, issue 32).
AUTO_THREADS_MIN_FLOPS = 5e9


def setup_device(device: torch.device, threads: int | str = 0, step_flops: float = 0.0) -> int:
    """Set and return the CPU threads: N if asked for, torch's default for 0, and for 'auto' one thread for a
    step under AUTO_THREADS_MIN_FLOPS, else torch's default: from the work, never the load, so the choice
    (and the order of sums it implies) is the same whenever this config runs on this machine. TF32 for
    float32 matrix products on CUDA: ~8x the fp32 rate on Ampere and later for a 10-bit mantissa in the
    products, which training does not notice (PyTorch leaves it off)."""
    n = base_threads()
    if threads == "auto":
        n = 1 if device.type == "cpu" and step_flops < AUTO_THREADS_MIN_FLOPS else n
    elif isinstance(threads, int) and threads > 0:
        n = threads
    torch.set_num_threads(n)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return n


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


# -- threads for short commands -------------------------------------------------------------------------


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
