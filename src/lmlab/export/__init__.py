"""Carry lmlab models to other ecosystems: the HF transformers formats (GPT-2; Llama and Qwen3 for the llama
rungs), out and in, and ONNX."""

from pathlib import Path

from lmlab.export.hf import export_hf, import_hf, load_hf_dir
from lmlab.export.hf_convert import ExportError
from lmlab.export.llama import export_llama
from lmlab.models.llama import Llama


def export_run(run, format: str, out: str | Path, force: bool = False) -> Path:  # noqa: A002 -- the CLI's --format
    """Write `run` in `format` ("hf" or "onnx") into `out` (a non-empty `out` only with `force`, never a run
    folder); returns the folder."""
    if format == "hf":
        exporter = export_llama if isinstance(run.model, Llama) else export_hf
        return exporter(run, out, force=force)
    if format == "onnx":
        from lmlab.export.onnx import export_onnx  # needs the optional onnx packages

        return export_onnx(run, out, force=force)[0]
    raise ExportError(f"unknown export format {format!r}; choose hf or onnx")


__all__ = ["ExportError", "export_hf", "export_run", "import_hf", "load_hf_dir"]
