"""Carry lmlab models to other ecosystems: the HF transformers GPT-2 format (out and in)."""

from lmlab.export.hf import ExportError, export_hf, import_hf, load_hf_dir

__all__ = ["ExportError", "export_hf", "import_hf", "load_hf_dir"]
