"""TransformerLens, offline: an lmlab run opened as a TransformerBridge, with a hook on every activation,
`run_with_cache`, and lmlab's own logits.

TransformerLens 4 replaced HookedTransformer (and its weight converters) with a bridge that wraps a
transformers model. lmlab's HF export is already a transformers model: GPT-2 for the GPT rungs at any size,
Llama or Qwen3 for the llama rungs, all architectures the bridge supports. So the TransformerLens format is
the HF export folder, booted with local files only (`boot_transformers(name)` alone would look the name up
on the Hub), and checked before it counts as written: the bridge's logits must equal lmlab's within
LOGIT_TOLERANCE on random ids.

What the bridge cannot hold is what the HF export refuses (export/hf_convert.py, export/llama.py): a GPT
without biases, and the `gpt+...` ablation rungs that keep GPT-2's learned positions, LayerNorm or GELU MLP
on the Llama class.

    bridge = load_transformer_lens("hf-gpt")            # the folder `lmlab export RUN --format transformer-lens` wrote
    logits, cache = bridge.run_with_cache(ids)          # cache["blocks.0.attn.hook_pattern"]: (B, nh, T, T)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmlab.export.hf import export_hf
from lmlab.export.hf_convert import ExportError
from lmlab.export.llama import export_llama
from lmlab.export.onnx import quiet
from lmlab.models.llama import Llama
from lmlab.run.folder import LoadedRun

log = logging.getLogger(__name__)

LOGIT_TOLERANCE = 1e-4  # float32 through the same operations in another order
INSTALL_HINT = "pip install 'lmlab[interp]'"


def require_transformer_lens() -> None:
    missing = [name for name in ("transformer_lens", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"TransformerLens needs the {' and '.join(missing)} package(s): {INSTALL_HINT}")


def load_transformer_lens(hf_dir: str | Path, device: str | torch.device = "cpu", compatibility: bool = False,
                          show_loading: bool = True) -> Any:
    """The HF export in `hf_dir` as a TransformerLens TransformerBridge, read from local files only.

    By default the bridge computes exactly what lmlab does (raw weights). `compatibility=True` turns on
    TransformerLens's HookedTransformer numerics (LayerNorm folded into the next weights, the writing weights
    and the unembedding centred): the log-probabilities stay the same, while each position's logits shift by
    a constant, as in TransformerLens's own GPT-2."""
    require_transformer_lens()
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise ExportError(f"{hf_dir}: no config.json; write the folder with lmlab export RUN --format "
                          "transformer-lens OUT (or --format hf)")
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    bars = transformers.utils.logging.is_progress_bar_enabled()
    if not show_loading:  # a notebook shows transformers' bar as a widget, which no stream capture stops
        transformers.utils.logging.disable_progress_bar()
    try:
        with contextlib.nullcontext() if show_loading else quiet():
            # Eager attention, as the bridge forces on its own loads: its hooks read the attention pattern.
            model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True,
                                                                      attn_implementation="eager")
            tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
            bridge = TransformerBridge.boot_transformers(str(hf_dir), hf_model=model, tokenizer=tokenizer,
                                                         device=device)
            if compatibility:
                bridge.enable_compatibility_mode()
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return bridge


@torch.no_grad()
def logit_difference(model: nn.Module, bridge: Any, vocab_size: int, block: int) -> float:
    """Largest |bridge - lmlab| logit over a few random batches, up to the full context."""
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    worst = 0.0
    for batch, time in ((1, 1), (3, min(block, 7)), (2, block)):
        ids = torch.randint(vocab_size, (batch, time), generator=generator)
        ours = model(ids.to(device)).logits.float().cpu()
        worst = max(worst, float((bridge(ids).float().cpu() - ours).abs().max()))
    return worst


def export_transformer_lens(run: LoadedRun, out: str | Path, force: bool = False) -> tuple[Path, float]:
    """Write the HF export of `run` into `out`, open it in TransformerLens and check its logits against
    lmlab's; returns the folder and the largest logit difference. ExportError when TransformerLens is
    missing, the model has no HF form, or the logits differ by more than LOGIT_TOLERANCE."""
    require_transformer_lens()
    exporter = export_llama if isinstance(run.model, Llama) else export_hf
    out = exporter(run, out, force=force)
    bridge = load_transformer_lens(out, show_loading=False)
    was_training = run.model.training
    run.model.eval()
    try:
        diff = logit_difference(run.model, bridge, run.tokenizer.vocab_size, run.model.config.block_size)
    finally:
        run.model.train(was_training)
    if not diff <= LOGIT_TOLERANCE:
        raise ExportError(f"TransformerLens computes other logits than lmlab for this {run.config.model_name!r} "
                          f"model (max difference {diff:.2e} > {LOGIT_TOLERANCE:g}); the folder in {out} is the "
                          "plain HF export")
    return out, diff
