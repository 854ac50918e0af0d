"""What makes an exported folder behave as `lmlab sample` and read well on a model hub: generation_config.json
with lmlab's sampling defaults, and a README.md model card."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError
from lmlab.files import read_json_file
from lmlab.models import count_parameters
from lmlab.run.config import RunConfig, resolve_config
from lmlab.run.folder import LoadedRun
from lmlab.tokenizers import CharTokenizer, tokenizer_kind


def generation_config(boundary_id: int, context: int, lines_mode: bool) -> dict[str, Any]:
    """`lmlab sample`'s defaults in transformers' terms: plain sampling at temperature 1 (HF would otherwise
    apply top_k=50), and a length that stays inside the context (GPT-2 has no positions past it). A
    lines-mode sample ends at the boundary token; a stream-mode one does not (as in lmlab). No pad id: the
    leading boundary (BOS) would then count as padding whenever a caller passes another eos_token_id without
    an attention mask, changing the output; without one, generate() pads with the eos in use."""
    config: dict[str, Any] = {"bos_token_id": boundary_id, "do_sample": True,
                              "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_length": context}
    if lines_mode:
        config["eos_token_id"] = boundary_id
    return config


def train_command(config: RunConfig) -> str:
    """The `lmlab train` command that makes this run's configuration (values other than the defaults)."""
    defaults = resolve_config({"model": {"name": config.model_name}}).to_dict()
    ours = config.to_dict()
    args = ["lmlab", "train", "--data", config.data.source, "--model", config.model_name]
    filled_in = {"model": {"vocab_size", "block_size", "pad_id"}, "data": {"source"}, "train": {"device"}}
    for section in ("data", "model", "train"):
        for key, value in ours[section].items():
            if key in filled_in[section] or value == defaults[section].get(key) or value is None:
                continue
            if section == "data" and key == "vocab_size" and ours["data"]["tokenizer"] == "char":
                continue
            args += ["--set", f"{section}.{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    return shlex.join(args)


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = read_json_file(run_dir / "summary.json")
    except LmlabError:
        return {}
    return summary if isinstance(summary, dict) else {}


def _source_size(source: str) -> str:
    path = Path(source).expanduser()
    try:
        if path.is_file():
            return f"{path.stat().st_size:,} bytes"
        if path.is_dir():
            return f"{sum(p.stat().st_size for p in path.rglob('*') if p.is_file()):,} bytes (folder)"
    except OSError:
        pass
    return "an embedded lmlab data set"


def model_card(run: LoadedRun) -> str:
    """README.md: YAML front matter for a hub (licence left for the user), then what the model is, how it was
    trained, how well it does, and how to use it within its limits."""
    config, model = run.config.model, run.model
    architecture = ("GPT-2 (GPT2LMHeadModel)" if type(model).__name__ == "GPT" else
                    "Qwen3 (Qwen3ForCausalLM)" if getattr(config, "qk_norm", False) else "Llama (LlamaForCausalLM)")
    summary = _summary(run.run_dir)
    nll = summary.get("nll") if isinstance(summary.get("nll"), dict) else {}
    steps = summary.get("steps", run.step)
    tokens = None
    if isinstance(summary.get("tokens_per_s"), (int, float)) and isinstance(summary.get("train_seconds"),
                                                                              (int, float)):
        tokens = round(summary["tokens_per_s"] * summary["train_seconds"])
    mode = run.config.data.mode or "unknown"
    tok = run.tokenizer
    kind = tokenizer_kind(tok)
    context = model.config.block_size
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: [{architecture.split()[0].lower().replace('-', '')}, lmlab]",
        "license: \"\"  # choose a licence before publishing (and check the training data's terms)",
        "---",
        "",
        f"# {run.run_dir.name}: a small {architecture} trained with lmlab",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {architecture}: {config.n_layer} layers, {config.n_head} heads, "
        f"width {config.n_embd}, {getattr(config, 'activation', None) or getattr(config, 'mlp', '')} |",
        f"| parameters | {count_parameters(model):,} |",
        f"| context length | {context} tokens (prompt and generated tokens together) |",
        f"| tokenizer | lmlab {kind}, {tok.vocab_size} tokens |",
        f"| training data | `{run.config.data.source}` ({_source_size(run.config.data.source)}), {mode} mode |",
        f"| training | {steps:,} steps" + (f", about {tokens:,} tokens seen" if tokens else "") + " |",
    ]
    for split in ("train", "val", "test"):
        if isinstance(nll.get(split), (int, float)):
            lines.append(f"| {split} NLL | {nll[split]:.4f} nats/token |")
    lines += [
        "",
        "Trained with:",
        "",
        "```",
        train_command(run.config),
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "generate = pipeline('text-generation', model='PATH/TO/THIS/FOLDER')",
        "print(generate('PROMPT')[0]['generated_text'])  # PROMPT: text in the model's vocabulary",
        f"print(generate('PROMPT', max_length={max(2, context // 2)})[0]['generated_text'])  # shorter: at most "
        f"{max(2, context // 2)} tokens, prompt included",
        "```",
        "",
        f"- The model has positions for {context} tokens: generation cannot go past that length (GPT-2 "
        f"raises an IndexError); `generation_config.json` sets `max_length: {context}`. Ask for less with "
        "`max_length` (prompt included): `max_new_tokens` beside it makes transformers warn that both are set, "
        "and may run past the context.",
        "- `generation_config.json` samples as `lmlab sample` does: temperature 1, no top-k or top-p.",
        "- Special tokens: `<|endoftext|>` (the boundary between examples) is bos, eos and the tokenizer's "
        "pad; padding is on the left, as batched generation with a decoder-only model needs.",
    ]
    if mode == "lines":
        lines.append("- Each example is one line. The tokenizer puts `<|endoftext|>` first, as the model saw "
                     "in training, and generation ends at the next `<|endoftext|>`: one line per sample.")
    if isinstance(tok, CharTokenizer):
        known = "".join(tok.vocab[1:])
        lines.append(f"- The model knows these {len(known)} characters only: `{json.dumps(known)[1:-1]}`. "
                     "Encoding any other character is an error (as in lmlab), never a silent substitute.")
    elif kind == "word":
        lines.append("- Words outside the vocabulary become `<unk>` (the unknown token).")
    lines.append("")
    return "\n".join(lines)
