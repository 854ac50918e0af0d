"""Speed on one device: TF32 and bf16 autocast on CUDA, fused AdamW, optional torch.compile, and the
arithmetic behind model FLOPs utilisation (MFU).

MFU follows the PaLM paper's appendix B (as nanoGPT's `estimate_mfu`): a training token costs 6 FLOPs per
parameter (forward 2, backward 4) plus, in attention, 12 * n_layer * n_embd * T for the score and value
products; divide the achieved FLOP rate by the device's peak.
"""

from __future__ import annotations

import contextlib

import torch

# Dense peak FLOP/s (no sparsity) by device-name fragment: bf16 tensor cores, and fp32 with TF32.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; the PCIe card peaks lower (756e12)
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L40S": {"bfloat16": 362e12, "float32": 181e12},
    "A10G": {"bfloat16": 70e12, "float32": 35e12},
    "4090": {"bfloat16": 165e12, "float32": 82.6e12},
}


def setup_device(device: torch.device, threads: int = 0) -> None:
    """CPU threads if asked for; TF32 for float32 matrix products on CUDA: ~8x the fp32 rate on Ampere and
    later for a 10-bit mantissa in the products, which training does not notice (PyTorch leaves it off)."""
    if threads:
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
