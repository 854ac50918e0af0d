"""ONNX export through `torch.onnx` (the torch.export-based exporter), checked with onnxruntime when present.

The graph maps `input_ids` (B, T) int64 to `logits` (B, T, V) float32, with B and T dynamic (T up to the
model's context; any length for recurrent models), so a runtime can score text or drive its own sampling
loop. The graph's metadata says the longest T, the boundary token and the data mode. The tokenizer goes
beside it in the HF format (tokenizer.json), which onnxruntime-genai and transformers.js read.
Needs the optional packages onnx and onnxscript (`pip install lmlab[onnx]`); onnxruntime for the check.
The exporter's own chatter (torch's warnings, onnxscript's optimizer passes) is captured and logged at
debug level, so the command prints one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from lmlab.export.hf_convert import ExportError, hf_tokenizer_files
from lmlab.export.safety import check_export_target
from lmlab.models.base import capability
from lmlab.run.folder import LoadedRun

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
UNBOUNDED_CHECK_LENGTH = 64  # recurrent models: the longest length the parity check runs


def max_length(model: nn.Module) -> int | None:
    """The longest input the graph takes: the model's context, or None for a recurrent model (any length)."""
    if hasattr(model, "max_context") and model.max_context is None:
        return None
    context = capability(model, "max_context") or 256
    return max(getattr(model.config, "block_size", 0), context)


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Capture everything written to stdout and stderr, by Python or by C code, into the yielded buffer."""
    captured = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", "replace"))


class _LogitsOnly(nn.Module):
    """ONNX graphs return tensors, not ModelOutput objects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids).logits


def export_onnx(run: LoadedRun, out: str | Path, check: bool = True, force: bool = False) -> tuple[Path, float | None]:
    """Write OUT/model.onnx and the tokenizer files. Returns the path and, when onnxruntime is installed
    and `check`, the largest logit difference between onnxruntime and lmlab on random inputs. OUT must be
    new or empty (or `force`), and is never a run directory."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format onnx needs the {' and '.join(missing)} package(s): pip install lmlab[onnx]")
    if capability(run.model, "counted"):
        raise ExportError(f"a {run.config.model_name!r} model is a table of counts; export a trained network")
    longest = max_length(run.model)
    block = longest or UNBOUNDED_CHECK_LENGTH
    tokenizer_files = hf_tokenizer_files(run.tokenizer, block, run.config.data.mode == "lines")
    out = check_export_target(Path(out), run.run_dir, force)
    model = _LogitsOnly(run.model).eval()
    example = torch.zeros(2, min(block, 8), dtype=torch.long)
    # T can be 1 (generation starts from the boundary token alone); torch.export would otherwise
    # specialise on the sizes 0 and 1.
    time = torch.export.Dim("time", min=1, max=longest) if longest else torch.export.Dim("time", min=1)
    dims = {0: torch.export.Dim("batch"), 1: time}
    out.mkdir(parents=True, exist_ok=True)
    try:
        with quiet() as chatter:
            program = torch.onnx.export(model, (example,), input_names=["input_ids"], output_names=["logits"],
                                        dynamic_shapes={"input_ids": dims}, dynamo=True, verbose=False)
            program.save(str(out / ONNX_FILE))
    except Exception as err:  # noqa: BLE001 (the exporter raises many types; all mean "cannot export this")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch.onnx could not export the {run.config.model_name!r} model: {first}") from None
    log.debug("torch.onnx output:\n%s", chatter.getvalue())
    describe_graph(out / ONNX_FILE, {"max_sequence_length": str(longest) if longest else "unbounded",
                                     "vocab_size": str(run.tokenizer.vocab_size),
                                     "boundary_token_id": str(run.tokenizer.boundary_id),
                                     "data_mode": str(run.config.data.mode), "model": run.config.model_name})
    for name, text in tokenizer_files.items():
        (out / name).write_text(text, encoding="utf-8")
    run.tokenizer.save(out / "lmlab_tokenizer.json")
    diff = check_onnx(model, out / ONNX_FILE, run.tokenizer.vocab_size, block) if check else None
    return out, diff


def describe_graph(path: Path, metadata: dict[str, str]) -> None:
    """Add `metadata` (as lmlab.KEY) to the graph, and give the output the input's symbolic batch and time
    dimensions: the exporter may leave the example's length in declared shapes (recurrent models: the
    loop's output), which makes onnxruntime warn on every other length. Intermediate shapes are only
    hints, so they are dropped; onnxruntime infers them again from the dynamic input."""
    import onnx

    graph_model = onnx.load(str(path), load_external_data=False)
    del graph_model.graph.value_info[:]
    given, output = graph_model.graph.input[0].type.tensor_type.shape, graph_model.graph.output[0].type.tensor_type
    for i in (0, 1):
        output.shape.dim[i].CopyFrom(given.dim[i])
    for key, value in metadata.items():
        graph_model.metadata_props.add(key=f"lmlab.{key}", value=value)
    onnx.save(graph_model, str(path))


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
    for batch, time in ((1, 1), (3, min(block, 5)), (2, block), (1, max(2, block - 3))):
        ids = torch.randint(vocab_size, (batch, time), generator=generator)
        theirs = torch.from_numpy(session.run(["logits"], {"input_ids": ids.numpy()})[0])
        worst = max(worst, float((theirs - model(ids).float()).abs().max()))
    return worst
