"""Carry lmlab models to other ecosystems: the HF transformers formats (GPT-2; Llama and Qwen3 for the llama
rungs), out and in, ONNX, and TransformerLens (the HF export, checked in TransformerLens)."""

from pathlib import Path

from lmlab.export.hf import export_hf, import_hf, load_hf_dir
from lmlab.export.hf_convert import ExportError
from lmlab.export.llama import export_llama
from lmlab.models.llama import Llama


def export_run(run, format: str, out: str | Path, force: bool = False) -> Path:  # noqa: A002 -- the CLI's --format
    """Write `run` in `format` ("hf", "onnx" or "transformer-lens") into `out` (a non-empty `out` only with
    `force`, never a run folder); returns the folder."""
    if format == "hf":
        exporter = export_llama if isinstance(run.model, Llama) else export_hf
        return exporter(run, out, force=force)
    if format == "onnx":
        from lmlab.export.onnx import export_onnx  # needs the optional onnx packages

        return export_onnx(run, out, force=force)[0]
    if format == "transformer-lens":
        from lmlab.export.transformer_lens import export_transformer_lens  # needs lmlab[interp]

        return export_transformer_lens(run, out, force=force)[0]
    raise ExportError(f"unknown export format {format!r}; choose hf, onnx or transformer-lens")


__all__ = ["ExportError", "export_hf", "export_run", "import_hf", "load_hf_dir"]
