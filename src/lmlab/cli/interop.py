"""`lmlab export` and `lmlab import`: runs to and from the HF transformers and ONNX formats, and out to
TransformerLens."""

from __future__ import annotations

import argparse

# The exporters and the run loader (torch) are imported by the commands, so that `--help` starts at once.


def cmd_export(args: argparse.Namespace) -> int:
    """Write a trained run for other tools: the HF transformers format (GPT-2, Llama or Qwen3), ONNX, or
    TransformerLens.

    hf: config.json, model.safetensors and tokenizer files that AutoModelForCausalLM and AutoTokenizer
    load offline. onnx: model.onnx (input_ids -> logits), checked against onnxruntime when installed.
    transformer-lens: the hf folder, opened in TransformerLens and its logits checked against lmlab's."""
    from lmlab.run import load

    run = load(args.run)
    if args.format == "transformer-lens":
        from lmlab.export.transformer_lens import LOGIT_TOLERANCE, export_transformer_lens

        out, diff = export_transformer_lens(run, args.out, force=args.force)
        print(f"wrote {out}: TransformerLens logits match lmlab's (max |difference| {diff:.1e} <= "
              f"{LOGIT_TOLERANCE:g}); open it with lmlab.export.transformer_lens.load_transformer_lens("
              f"{str(out)!r}), then bridge.run_with_cache(ids)")
        return 0
    if args.format == "onnx":
        from lmlab.export.onnx import export_onnx, max_length

        out, diff = export_onnx(run, args.out, force=args.force)
        longest = max_length(run.model)
        length = f"T <= {longest}" if longest else "T any length (recurrent)"
        checked = "not checked (onnxruntime is not installed)" if diff is None else \
            f"max |logit difference| vs lmlab {diff:.1e}"
        print(f"wrote {out / 'model.onnx'}: input_ids (B, T) -> logits (B, T, V), {length}; {checked}")
        return 0

    from lmlab.export import export_run

    out = export_run(run, "hf", args.out, force=args.force)
    context = run.model.config.block_size
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          f"and AutoTokenizer.from_pretrained; context {context} tokens (prompt included); model card: "
          f"{out / 'README.md'}")
    return 0


def export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--format", choices=["hf", "onnx", "transformer-lens"], default="hf",
                   help="hf: transformers GPT-2, or Llama/Qwen3 for the llama rungs (default); onnx: an ONNX graph "
                   "(needs lmlab[onnx]); transformer-lens: the hf folder, checked in TransformerLens (needs "
                   "lmlab[interp])")
    p.add_argument("out", metavar="OUT", help="directory to write (new or empty; never a run directory)")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT, replacing the export "
                   "files there (a run directory is refused even so)")


def cmd_import(args: argparse.Namespace) -> int:
    """Turn a local HF GPT-2, Llama or Qwen3 directory into an lmlab run that samples, evaluates and fine-tunes
    (--resume)."""
    from lmlab.export import import_hf
    from lmlab.export.llama import import_llama, is_llama_dir
    from lmlab.models import count_parameters

    data = {k: v for k, v in {"source": args.data, "mode": args.mode}.items() if v is not None}
    run = (import_llama if is_llama_dir(args.hf_dir) else import_hf)(args.hf_dir, args.out, data)
    print(f"{run.run_dir}: {type(run.model).__name__}, {count_parameters(run.model):,} parameters, "
          f"vocab {run.tokenizer.vocab_size}, "
          f"context {run.model.config.block_size}. Sample: lmlab sample {run.run_dir}; fine-tune on "
          f"{run.config.data.source}: lmlab train --out {run.run_dir} --resume --max-steps N")
    return 0


def import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_dir", metavar="HF_DIR", help="a local GPT-2, Llama or Qwen3 directory (config.json, "
                   "model.safetensors, tokenizer.json)")
    p.add_argument("--out", required=True, metavar="RUN", help="the run directory to create")
    p.add_argument("--data", metavar="SRC", help="the data eval and fine-tuning use (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="lines or stream (default: the data set's own)")
