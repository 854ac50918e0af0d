"""Compare finished runs side by side: one row per run or seed group (model, parameters, train/val/test NLL,
bits per character, bits per byte, tokens/s, training time) read from each run directory's summary.json,
config.json and metrics.jsonl, as a text table, JSON, and a PNG of the validation curves; and the difference
of each run from the first with its standard error and p-value (`differences`).

A seed group (experiments/seeds.py) is one row: each number the mean over its seeds, the NLL with its
standard error, and its curves drawn as the mean with a band from the lowest to the highest seed.
The table reads files only: it knows nothing of how the runs were trained, so runs from `lmlab train`,
`lmlab ladder` or a script compare alike. Pairing single runs by evaluation unit loads their models.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lmlab.errors import CheckpointError, LmlabError
from lmlab.experiments.groups import group_members, is_group
from lmlab.experiments.stats import Difference, mean_se, paired_by_seed, paired_by_unit, unpaired_over_seeds
from lmlab.files import atomic_write, claim_output_file, is_run_folder, not_a_file, parse_json
from lmlab.notebook import Comparison
from lmlab.run.folder import RunDir
from lmlab.training.checkpoint.format import read_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val_loss) of every evaluation logged in metrics.jsonl, in order."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {err.start}); corrupted metrics") from None
    points = []
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line, f"{path}:{n}", CheckpointError, "not a JSON record")
        except CheckpointError:
            if n == len(lines) and not text.endswith("\n"):  # cut short by a kill mid-write: skipped
                continue
            raise
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}:{n}: not a JSON object")
        if "val_loss" in record:
            step, loss = record.get("step"), record["val_loss"]
            if not (isinstance(step, int) and _number(step) and (_number(loss) or loss is None)):
                raise CheckpointError(f"{path}:{n}: step {step!r:.20} or val_loss {loss!r:.20} is not a number")
            if loss is not None:
                points.append((step, float(loss)))
    return points


class NotARun(CheckpointError):
    """A folder the user named holds no run at all (a typo, a wrong folder): an error, never skipped."""


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """One comparison row for a finished run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARun(f"{run_dir}: no such run directory")
    if not is_run_folder(run_dir):
        raise NotARun(f"{run_dir}: not an lmlab run (no config.json, trainer state or metrics)")
    problem = not_a_file(run_dir / "summary.json")
    if problem and problem != "missing":
        raise CheckpointError(f"{run_dir}: summary.json is {problem}, not a file")
    if problem and RunDir(run_dir).is_untrained_import():  # --resume would fine-tune it: not what compare wants
        raise CheckpointError(f"{run_dir}: an imported model (lmlab import), not trained here, has no "
                              f"summary.json to compare; lmlab eval {run_dir} scores it")
    if problem:
        raise CheckpointError(f"{run_dir}: no summary.json; the run did not finish (resume it with lmlab train "
                              f"--out {run_dir} --resume)")
    summary = read_json(run_dir / "summary.json", "summary")
    config = read_json(run_dir / "config.json", "config") if (run_dir / "config.json").is_file() else {}
    _check_summary(summary, run_dir / "summary.json")
    nll = {split: summary.get("nll", {}).get(split) for split in SPLITS}
    # A character tokenizer makes one token one character, so bits per token are bits per character.
    held_out = nll["test"] if nll["test"] is not None else nll["val"]
    char_level = config.get("data", {}).get("tokenizer", "char") == "char"
    bpb = summary.get("bits_per_byte") or {}  # runs written before bits per byte have none
    return {
        "run": str(run_dir),
        "model": str(summary.get("model", config.get("model", {}).get("name", "?"))),
        "parameters": summary.get("parameters"),
        "steps": summary.get("steps"),
        "nll": nll,
        "nll_se": {split: None for split in SPLITS},
        "bits_per_char": held_out / math.log(2) if held_out is not None and char_level else None,
        "bits_per_byte": {split: bpb.get(split) for split in SPLITS},
        "tokens_per_s": summary.get("tokens_per_s"),
        "train_seconds": summary.get("train_seconds"),
        "tokens": summary.get("tokens"),  # runs written before work budgets have none
        "flops": summary.get("flops"),
        "val_curve": val_curve(run_dir),
        "seeds": [config.get("train", {}).get("seed")],
        "per_seed_nll": {split: [nll[split]] for split in SPLITS},
    }


def summarize(path: str | Path) -> dict[str, Any]:
    """One comparison row for a run folder, or for a seed group: the mean over its seeds, with the SE."""
    path = Path(path)
    if not is_group(path):
        return summarize_run(path)
    try:
        members = [summarize_run(m.path) for m in group_members(path)]
    except NotARun as err:  # a seed not started yet: the group did not finish, as a run without its summary
        raise CheckpointError(f"{path}: the seed group did not finish ({err})") from None
    first = members[0]

    def mean_of(values: list[Any]) -> float | None:
        numbers = [v for v in values if v is not None]
        return math.fsum(numbers) / len(numbers) if numbers and len(numbers) == len(values) else None

    nll_stats = {split: mean_se([m["nll"][split] for m in members]) if all(m["nll"][split] is not None
                 for m in members) else None for split in SPLITS}
    return {
        "run": str(path),
        "model": first["model"],
        "parameters": first["parameters"],
        "steps": mean_of([m["steps"] for m in members]),
        "nll": {split: s.mean if s else None for split, s in nll_stats.items()},
        "nll_se": {split: s.se if s else None for split, s in nll_stats.items()},
        "bits_per_char": mean_of([m["bits_per_char"] for m in members]),
        "bits_per_byte": {split: mean_of([m["bits_per_byte"][split] for m in members]) for split in SPLITS},
        "tokens_per_s": mean_of([m["tokens_per_s"] for m in members]),
        "train_seconds": mean_of([m["train_seconds"] for m in members]),
        "tokens": mean_of([m["tokens"] for m in members]),
        "flops": mean_of([m["flops"] for m in members]),
        "val_curve": first["val_curve"],
        "val_curves": [m["val_curve"] for m in members],
        "seeds": [m.seed for m in group_members(path)],
        "members": [str(m.path) for m in group_members(path)],
        "per_seed_nll": {split: [m["nll"][split] for m in members] for split in SPLITS},
    }


def _check_summary(summary: Any, path: Path) -> None:
    """CheckpointError unless summary.json holds what `write_summary` writes, with the types the table needs."""
    if not isinstance(summary, dict):
        raise CheckpointError(f"{path}: corrupted summary (not a JSON object)")
    nll = summary.get("nll", {})
    if not isinstance(nll, dict) or not all(_number(nll.get(s)) or nll.get(s) is None for s in SPLITS):
        raise CheckpointError(f"{path}: corrupted summary (nll is not a number per split)")
    for key in ("parameters", "steps", "tokens_per_s", "train_seconds"):
        if not (summary.get(key) is None or _number(summary[key])):
            raise CheckpointError(f"{path}: corrupted summary ({key} is {summary[key]!r:.30}, not a number)")
    if not isinstance(summary.get("model", ""), str):
        raise CheckpointError(f"{path}: corrupted summary (model is not a name)")


def compare_runs(run_dirs: list[str | Path]) -> Comparison:
    """One row per readable run, as a list that shows as a table with the curves in Jupyter. A run that
    cannot be read (unfinished, or a corrupted summary.json, config.json or metrics.jsonl) is left out with a
    warning, so one bad folder does not hide the others; when none can be read, the (first) reason is the
    error. A path that holds no run at all is an error at once (NotARun): it is a mistake, not a run to skip."""
    if not run_dirs:
        raise LmlabError("give at least one run directory to compare")
    rows, errors = [], []
    for run_dir in run_dirs:
        try:
            rows.append(summarize(run_dir))
        except NotARun:
            raise
        except CheckpointError as err:
            errors.append(err)
    if not rows:
        if len(errors) == 1:
            raise errors[0]
        raise CheckpointError(f"none of the {len(errors)} runs can be compared; the first: {errors[0]}")
    for err in errors:
        log.warning("skipping a run: %s", err)
    return Comparison(rows)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _nll_cell(row: dict[str, Any], split: str) -> str:
    value, se = row["nll"][split], row.get("nll_se", {}).get(split)
    return "-" if value is None else f"{value:.4f}" + ("" if se is None else f"±{se:.4f}")


def held_out_split(row: dict[str, Any]) -> str:
    return "test" if row["nll"]["test"] is not None else "val"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table; bits/char and bits/byte are from the test split (val when there is none).
    A seed group's NLL reads mean±SE over its seeds."""
    header = ["run", "model", "params", "steps", "tokens", "train", "val", "test", "bits/char", "bits/byte",
              "tokens/s", "seconds"]
    body = [
        [
            row.get("mark", "") + (Path(row["run"]).name or row["run"]),
            row["model"],
            _cell(row["parameters"], ","),
            _cell(None if row.get("steps") is None else round(row["steps"]), ","),
            _cell(None if row.get("tokens") is None else round(row["tokens"]), ","),
            *(_nll_cell(row, s) for s in SPLITS),
            _cell(row["bits_per_char"], ".4f"),
            _cell(row["bits_per_byte"][held_out_split(row)], ".4f"),
            _cell(None if row["tokens_per_s"] is None else round(row["tokens_per_s"]), ","),
            _cell(row["train_seconds"], ".1f"),
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False)))
             for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    groups = [row for row in rows if len(row.get("seeds", [])) > 1]
    note = f"; a seed group's NLL is mean±SE over its {'/'.join(sorted({str(len(r['seeds'])) for r in groups}))} " \
        "seeds" if groups else ""
    marked = "; * the best held-out NLL, ~ not distinguishable from it (p >= 0.05)" if any(
        row.get("mark") for row in rows) else ""
    return "\n".join(lines) + f"\n\nNLL in nats per token; bits/char and bits/byte from the test split{note}{marked}.\n"


def mark_best(rows: list[dict[str, Any]], block_tokens: int = 256) -> None:
    """Set each row's "mark": "*" the lowest held-out NLL (test, or val), "~" a row whose difference from it is
    not significant (`difference`'s pairing), "" a worse one or one that cannot be paired with it."""
    scored = [r for r in rows if r["nll"][held_out_split(r)] is not None]
    for row in rows:
        row["mark"] = ""
    if not scored:
        return
    best = min(scored, key=lambda r: r["nll"][held_out_split(r)])
    best["mark"] = "*"
    for row in scored:
        if row is best or held_out_split(row) != held_out_split(best):
            continue
        try:
            found = difference(row, best, held_out_split(best), block_tokens)
        except LmlabError as err:
            log.warning("%s: not compared with the best row: %s", row["run"], err)
            continue
        row["mark"] = "" if found.significant else "~"


# ----------------------------------------------------------------------------------------------------------
# Differences between runs


def difference(a: dict[str, Any], b: dict[str, Any], split: str, block_tokens: int = 256) -> Difference:
    """a's NLL minus b's on `split`, paired as well as the two allow (experiments/stats.py): by seed when both
    are groups of the same seeds, over seeds when both have two or more, else by evaluation unit (loads both
    models and scores the split)."""
    if a["nll"][split] is None or b["nll"][split] is None:
        raise LmlabError(f"no {split} split in {a['run'] if a['nll'][split] is None else b['run']}")
    seeds_a, seeds_b = a["seeds"], b["seeds"]
    values_a, values_b = a["per_seed_nll"][split], b["per_seed_nll"][split]
    if len(seeds_a) > 1 and sorted(seeds_a) == sorted(seeds_b):
        order_b = {seed: v for seed, v in zip(seeds_b, values_b, strict=True)}
        return paired_by_seed(values_a, [order_b[seed] for seed in seeds_a])
    if len(seeds_a) > 1 and len(seeds_b) > 1:
        return unpaired_over_seeds(values_a, values_b)
    if len(seeds_a) > 1 or len(seeds_b) > 1:
        raise LmlabError(f"{a['run']} and {b['run']}: a seed group compares with another seed group (train the "
                         "single run with --seeds too)")
    sums_a, tokens = unit_nll(Path(a.get("members", [a["run"]])[0]), split, block_tokens)
    sums_b, tokens_b = unit_nll(Path(b.get("members", [b["run"]])[0]), split, block_tokens)
    if tokens != tokens_b or len(sums_a) != len(sums_b):
        raise LmlabError(f"{a['run']} and {b['run']} score different {split} tokens ({tokens:,} against "
                         f"{tokens_b:,}): pairing needs one split and one tokenizer; compare their bits per byte")
    return paired_by_unit(sums_a, sums_b, tokens)


def unit_nll(run_dir: Path, split: str, block_tokens: int = 256) -> tuple[list[float], int]:
    """(summed NLL of each evaluation unit, predicted tokens) of a run on `split`: its examples in lines mode,
    consecutive blocks of `block_tokens` predicted tokens in stream mode. Tokens of one window share their
    context and are correlated, so a block spans several windows (benchmarks/ablation.py pairs the same way)."""
    import torch
    import torch.nn.functional as F

    from lmlab.data.datasets import IGNORE_INDEX, LinesDataset, next_token_targets
    from lmlab.run.data import prepare_data
    from lmlab.run.folder import load_run

    run = load_run(run_dir)
    run.model.eval()
    dataset = prepare_data(run.config.data, tokenizer=run.tokenizer).splits[split]
    per_row, per_token = [], []
    with torch.no_grad():
        for input_ids, labels in dataset.iter_batches(256):
            logits = run.model(input_ids).logits[:, :-1].float()  # (B, T-1, V)
            target = next_token_targets(labels)  # (B, T-1)
            nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
            per_row.append(nll.sum(dim=1).double())
            per_token.append(nll[target != IGNORE_INDEX].double())  # row-major: the stream's order
    tokens = int(sum(len(t) for t in per_token))
    if isinstance(dataset, LinesDataset):
        return torch.cat(per_row).tolist(), tokens
    stream = torch.cat(per_token)
    return [float(block.sum()) for block in torch.split(stream, block_tokens)], tokens


def differences(rows: list[dict[str, Any]], splits: tuple[str, ...] = ("val", "test"),
                block_tokens: int = 256) -> list[dict[str, Any]]:
    """Each row after the first against the first, on each split both have."""
    base, found = rows[0], []
    for row in rows[1:]:
        for split in splits:
            if row["nll"][split] is None or base["nll"][split] is None:
                continue
            try:
                diff = difference(row, base, split, block_tokens)
            except LmlabError as err:
                found.append({"run": row["run"], "baseline": base["run"], "split": split, "error": str(err)})
                continue
            found.append({"run": row["run"], "baseline": base["run"], "split": split, "delta": diff.delta,
                          "se": diff.se, "p_value": diff.p_value, "units": diff.units, "method": diff.method,
                          "significant": diff.significant})
    return found


def format_differences(found: list[dict[str, Any]]) -> str:
    """One line per difference, saying plainly when it is not significant."""
    lines = []
    for d in found:
        name, base = Path(d["run"]).name, Path(d["baseline"]).name
        if "error" in d:
            lines.append(f"{d['split']}: {name} against {base}: not compared: {d['error']}")
            continue
        p = d["p_value"]
        verdict = (f"{name} is {'better' if d['delta'] < 0 else 'worse'} than {base}" if d["significant"] else
                   f"not significant: {name} and {base} cannot be told apart on this evidence")
        lines.append(f"{d['split']}: {name} - {base} = {d['delta']:+.4f} ± {d['se']:.4f} nats/token "
                     f"(p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}, {d['method']}, {d['units']:,} units): {verdict}")
    return "\n".join(lines) + ("\n" if lines else "")


X_AXES = {"step": "step", "tokens": "training tokens", "time": "training time (s)"}  # the plots' x axes and labels


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def _spread(row: dict[str, Any], step: int, total: str) -> float:
    """The run's `total` (train_seconds, tokens) at `step`, spread evenly over its steps (metrics.jsonl does
    not time evaluations, and a lines-mode step's tokens vary a little)."""
    steps, amount = row.get("steps") or 0, row.get(total) or 0.0
    return step / steps * amount if steps else 0.0


def plot_val_curves(rows: list[dict[str, Any]], path: str | Path, x: str = "step") -> Path:
    """A PNG of validation NLL against step (x="step"), training tokens (x="tokens": runs of different batch
    sizes side by side, as a ladder's are) or training time (x="time": runs with a time budget), one line per
    run. A run evaluated once (a counted n-gram) is a dashed horizontal line, so the rungs it should be beaten
    by can be read against it."""
    if x not in X_AXES:
        raise LmlabError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = claim_output_file(path, "the validation curves")
    fig = Figure(figsize=(8, 5))  # its own canvas: pyplot's backend (a notebook's inline one) is left alone
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    def at(row: dict[str, Any], step: int) -> float:
        return step if x == "step" else _spread(row, step, "train_seconds" if x == "time" else "tokens")

    last_step = max((at(row, p[0]) for row in rows for p in row["val_curve"]), default=1)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        name = Path(row["run"]).name
        label = row["model"] if row["model"] == name else f"{row['model']} ({name})"
        color = colors[i % len(colors)]
        points = row["val_curve"]
        curves = [c for c in row.get("val_curves", []) if c]
        if len(curves) > 1 and len(curves[0]) > 1:  # a seed group: the mean, and a band over its seeds
            steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
            at_step = [dict(c) for c in curves]
            lows = [min(c[st] for c in at_step) for st in steps]
            highs = [max(c[st] for c in at_step) for st in steps]
            means = [sum(c[st] for c in at_step) / len(at_step) for st in steps]
            xs = [at(row, st) for st in steps]
            ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)
            ax.plot(xs, means, marker=".", color=color, label=f"{label}, {len(curves)} seeds")
        elif len(points) == 1:
            ax.axhline(points[0][1], linestyle="--", linewidth=1, color=color, label=label)
        elif points:
            steps, losses = zip(*points, strict=False)
            ax.plot([at(row, st) for st in steps], losses, marker=".", color=color, label=label)
    ax.set_xlim(0, max(last_step, 1))
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel("validation NLL (nats/token)")
    ax.set_title("validation curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    return path
