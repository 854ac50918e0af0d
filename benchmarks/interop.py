"""HF interop figures: for GPT runs with each tokenizer lmlab trains (char, word, bpe), export to the
transformers format and measure the largest logit difference on validation text, and how often greedy text
from transformers (`AutoTokenizer` + `generate`, the exported generation config) equals `lmlab sample
--temperature 0` for the same prompt. Then the README round trip: import the BPE export, fine-tune it with
`lmlab train --resume`, export again, and measure the same.

    python3 benchmarks/interop.py [--steps 200] [--prompts 20] [--work /tmp/lmlab-interop]

Uses ../shared/data (names.txt, tinyshakespeare.txt). Prints a markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = ["--set", "model.n_layer=2", "--set", "model.n_head=2", "--set", "model.n_embd=64", "--no-inspect"]


def cli(*args: str) -> None:
    from lmlab.cli import main

    code = main(["-q", *args])
    if code != 0:
        raise SystemExit(f"lmlab {' '.join(args)} exited {code}")


def prompts_for(run, count: int) -> list[str]:
    """Short prompts from the validation text: the first two characters of names (lines mode), or a few
    words of prose (stream mode)."""
    from lmlab.run.data import prepare_data

    data = prepare_data(run.config.data, run.tokenizer)
    if run.config.data.mode == "lines":
        return [text[:2] for text in data.texts["val"][:count]]
    ids = data.splits["val"].ids
    step = max(1, (len(ids) - 16) // count)
    return [run.tokenizer.decode(ids[i * step : i * step + 6].tolist()) for i in range(count)]


@torch.no_grad()
def measure(run_dir: Path, hf_dir: Path, num_prompts: int) -> tuple[float, int, int]:
    """(max |logit diff| on validation windows, greedy texts equal, prompts)."""
    import transformers

    from lmlab.sample import SampleOptions, sample_texts
    from lmlab.run.data import prepare_data
    from lmlab.run.folder import load_run

    run = load_run(run_dir)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    val = prepare_data(run.config.data, run.tokenizer).splits["val"]
    context = run.model.config.block_size
    batch = next(iter(val.iter_batches(16)))[0][:, :context]
    worst = float((run.model(batch).logits - hf_model(batch).logits).abs().max())
    equal = 0
    prompts = prompts_for(run, num_prompts)
    for prompt in prompts:
        encoded = hf_tok(prompt, return_tensors="pt")
        new = context - encoded.input_ids.shape[1]  # HF has no positions past the context
        ours = sample_texts(run, SampleOptions(num_samples=1, prompt=prompt, temperature=0.0,
                                               max_new_tokens=new))[0]
        ids = hf_model.generate(**encoded, do_sample=False, max_length=context)
        theirs = prompt + hf_tok.decode(ids[0, encoded.input_ids.shape[1]:], skip_special_tokens=True)
        equal += theirs == ours
    return worst, equal, len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--work", default="/tmp/lmlab-interop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    names, shakespeare = str(SHARED / "names.txt"), str(SHARED / "tinyshakespeare.txt")
    cases = [
        ("char", names, []),
        ("word", shakespeare, ["--set", "data.tokenizer=word", "--set", "data.vocab_size=2048",
                               "--set", "data.block_size=64"]),
        ("bpe", shakespeare, ["--set", "data.tokenizer=bpe", "--set", "data.vocab_size=512",
                              "--set", "data.block_size=64"]),
        ("bpe", names, ["--set", "data.tokenizer=bpe", "--set", "data.vocab_size=300"]),
    ]
    rows = []
    for kind, source, extra in cases:
        name = f"{kind}-{Path(source).stem}"
        start = time.time()
        cli("train", "--data", source, "--model", "gpt", "--max-steps", str(args.steps), "--out",
            str(work / name), *TINY, *extra)
        cli("export", str(work / name), str(work / f"{name}-hf"))
        worst, equal, total = measure(work / name, work / f"{name}-hf", args.prompts)
        rows.append((f"{kind} ({Path(source).stem})", worst, equal, total, time.time() - start))
    # The README's round trip on the last (BPE, names) export: import, fine-tune, export again.
    start = time.time()
    last = f"bpe-{Path(names).stem}"
    cli("import", str(work / f"{last}-hf"), "--out", str(work / "imported"), "--data", names)
    cli("train", "--out", str(work / "imported"), "--resume", "--max-steps", "20", "--no-inspect")
    cli("export", str(work / "imported"), str(work / "imported-hf"))
    worst, equal, total = measure(work / "imported", work / "imported-hf", args.prompts)
    rows.append(("bpe (names): import → 20 fine-tune steps → export", worst, equal, total, time.time() - start))
    print("| run | max logit diff | greedy text equal | seconds |")
    print("|---|---|---|---|")
    for label, worst, equal, total, seconds in rows:
        print(f"| {label} | {worst:.1e} | {equal}/{total} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
