"""Seed groups: N runs of one config that differ only in train.seed, each an ordinary run folder inside one
group folder (`seed-<seed>/`), beside a `seeds.json` naming them. They share one split and one tokenizer
(data.split_seed is apart from train.seed, and the data is prepared once for all of them).

    lmlab train --seeds 3 --out runs/mlp3      # runs/mlp3/seed-1337, seed-1338, seed-1339, seeds.json

Anything that reads runs (compare, the ladder's and the sweep's tables) takes a group folder where it takes
a run folder, and reports the mean ± standard error over its seeds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import CheckpointError, ConfigError
from lmlab.files import atomic_write_text
from lmlab.run.config import RunConfig, merge_layers, resolve_config
from lmlab.run.data import RunData, prepare_data
from lmlab.run.folder import RunDir

if TYPE_CHECKING:
    from lmlab.run import Run

log = logging.getLogger(__name__)

GROUP_FILE = "seeds.json"
SUMMARY_FILE = "summary.json"


def parse_seeds(text: str | int, first: int) -> list[int]:
    """--seeds N (N seeds counting up from `first`, the config's train.seed) or --seeds 1,2,7 (those)."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ConfigError(f"--seeds takes a number of seeds >= 1 or a list (1,2,3), got {text!r}")
            seeds = list(range(first, first + count))
    except ValueError:
        raise ConfigError(f"--seeds takes a number of seeds or a comma-separated list, got {text!r}") from None
    if len(set(seeds)) != len(seeds) or not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must name distinct seeds >= 0, got {text!r}")
    return seeds


def seed_folder(group: Path, seed: int) -> Path:
    return Path(group) / f"seed-{seed}"


def is_group(path: str | Path) -> bool:
    return (Path(path) / GROUP_FILE).is_file()


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / SUMMARY_FILE).is_file()


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    seed: int
    path: Path


def group_members(path: str | Path) -> list[Member]:
    """The runs of a group folder (in seed order), or the one run of a run folder (its own train.seed)."""
    path = Path(path)
    if not is_group(path):
        config = path / "config.json"
        seed = None
        if config.is_file():
            try:
                seed = json.loads(config.read_text(encoding="utf-8"))["train"]["seed"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                seed = None
        return [Member(seed=seed if isinstance(seed, int) else -1, path=path)]
    try:
        record = json.loads((path / GROUP_FILE).read_text(encoding="utf-8"))
        seeds = [int(s) for s in record["seeds"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{path / GROUP_FILE}: corrupted seed group (no list of seeds)") from None
    return [Member(seed=s, path=seed_folder(path, s)) for s in seeds]


def write_group(path: Path, seeds: Sequence[int], config: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / GROUP_FILE, json.dumps({"seeds": list(seeds), "config": config}, indent=1) + "\n")


def train_seeds(
    config: dict[str, Any] | RunConfig,
    *,
    out: str | Path,
    seeds: Sequence[int],
    force: bool = False,
    data: RunData | None = None,
    on_seed_end: Callable[[int, Run], None] | None = None,
    **train_options: Any,
) -> list[Run]:
    """Train `config` once per seed into out/seed-<seed> through lmlab.train, on one prepared split. A seed
    whose folder already holds a finished run of this config is kept (a killed group, run again, trains only
    what is missing); an unfinished one is trained again from the start, so every seed's result is the same
    as in a group that was never interrupted."""
    from lmlab.run import load, train  # the pipeline; reading a group (compare) does not need it

    values = config.to_dict() if isinstance(config, RunConfig) else config
    resolved = resolve_config(values)  # a bad value fails before any folder is made
    out = Path(out)
    if RunDir(out).holds_run():
        raise CheckpointError(f"{out} holds a single run; a seed group needs a folder of its own")
    recorded = _recorded_config(out)
    same = recorded == json.loads(json.dumps(resolved.to_dict()))
    if recorded is not None and not same and not force:
        raise CheckpointError(f"{out} holds a seed group of another config; pass --force to train this one there")
    write_group(out, seeds, resolved.to_dict())
    data = data or prepare_data(resolved.data)
    runs = []
    for seed in seeds:
        folder = seed_folder(out, seed)
        seeded = merge_layers(values, {"train": {"seed": seed}})
        if same and is_finished(folder) and not force:
            log.info("seed %d: kept the finished run in %s", seed, folder)
            run = load(folder)
        else:
            run = train(seeded, out=folder, force=True, data=data, **train_options)
        runs.append(run)
        if on_seed_end is not None:
            on_seed_end(seed, run)
    return runs


def _recorded_config(path: Path) -> dict[str, Any] | None:
    """The config a group folder was trained with (None: no group there)."""
    if not is_group(path):
        return None
    try:
        return json.loads((path / GROUP_FILE).read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
