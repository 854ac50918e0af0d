"""ONNX export through `torch.onnx` (the torch.export-based exporter), checked with onnxruntime when present.

The graph maps `input_ids` (B, T) int64 to `logits` (B, T, V) float32, with B and T dynamic (T up to the
model's context), so a runtime can score text or drive its own sampling loop. The tokenizer goes beside it
in the HF format (tokenizer.json), which onnxruntime-genai and transformers.js read.
Needs the optional packages onnx and onnxscript (`pip install lmlab[onnx]`); onnxruntime for the check.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from lmlab.export.hf import ExportError, hf_tokenizer_files
from lmlab.training.run_dir import LoadedRun

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"


class _LogitsOnly(nn.Module):
    """ONNX graphs return tensors, not ModelOutput objects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids).logits


def export_onnx(run: LoadedRun, out: str | Path, check: bool = True) -> tuple[Path, float | None]:
    """Write OUT/model.onnx and the tokenizer files. Returns the path and, when onnxruntime is installed
    and `check`, the largest logit difference between onnxruntime and lmlab on random inputs."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format onnx needs the {' and '.join(missing)} package(s): pip install lmlab[onnx]")
    if getattr(run.model, "counted", False):
        raise ExportError(f"a {run.config.model_name!r} model is a table of counts; export a trained network")
    context = getattr(run.model, "max_context", None) or 256
    block = max(getattr(run.model.config, "block_size", 0), context)
    model = _LogitsOnly(run.model).eval()
    example = torch.zeros(2, min(block, 8), dtype=torch.long)
    # T can be 1 (generation starts from the boundary token alone); torch.export would otherwise
    # specialise on the sizes 0 and 1.
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time", min=1, max=block)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
            program = torch.onnx.export(model, (example,), input_names=["input_ids"], output_names=["logits"],
                                        dynamic_shapes={"input_ids": dims}, dynamo=True, verbose=False)
        program.save(str(out / ONNX_FILE))
    except Exception as err:  # noqa: BLE001 (the exporter raises many types; all mean "cannot export this")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch.onnx could not export the {run.config.model_name!r} model: {first}") from None
    try:
        for name, text in hf_tokenizer_files(run.tokenizer, block).items():
            (out / name).write_text(text, encoding="utf-8")
    except ExportError as err:
        log.warning("tokenizer not exported: %s", err)
    run.tokenizer.save(out / "lmlab_tokenizer.json")
    diff = check_onnx(model, out / ONNX_FILE, run.tokenizer.vocab_size, block) if check else None
    return out, diff


@torch.no_grad()
def check_onnx(model: nn.Module, path: Path, vocab_size: int, block: int) -> float | None:
    """Largest |onnxruntime - torch| logit over a few random batches, or None without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime is not installed: the ONNX file was not checked")
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, time in ((1, 1), (3, min(block, 5)), (2, block)):
        ids = torch.randint(vocab_size, (batch, time), generator=generator)
        theirs = torch.from_numpy(session.run(["logits"], {"input_ids": ids.numpy()})[0])
        worst = max(worst, float((theirs - model(ids).float()).abs().max()))
    return worst
