"""A seed group's folder: N runs of one config that differ only in train.seed, each an ordinary run folder
(`seed-<seed>/`) beside `seeds.json`, which names the seeds and the config (experiments/seeds.py trains one).
What reads runs (compare, the ladder's and the sweep's tables) takes a group folder where it takes a run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.errors import CheckpointError, ConfigError, LmlabError, check_count
from lmlab.files import atomic_write_text, read_json_file

GROUP_FILE = "seeds.json"
SUMMARY_FILE = "summary.json"


MAX_SEEDS = 1000  # each seed is a whole run: a few zeros too many would fill the disk


def parse_seeds(text: str | int, first: int) -> list[int]:
    """--seeds N (N seeds counting up from `first`, the config's train.seed) or --seeds 1,2,7 (those)."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = check_count(int(text), "--seeds", MAX_SEEDS)
            seeds = list(range(first, first + count))
    except ValueError:
        raise ConfigError(f"--seeds takes a number of seeds or a comma-separated list, got {text!r}") from None
    check_count(len(seeds), "the number of --seeds", MAX_SEEDS)
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
                seed = read_json_file(config)["train"]["seed"]
            except (LmlabError, KeyError, TypeError):
                seed = None
        return [Member(seed=seed if isinstance(seed, int) else -1, path=path)]
    try:
        record = read_json_file(path / GROUP_FILE)
        seeds = [int(s) for s in record["seeds"]]
    except (LmlabError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path / GROUP_FILE}: corrupted seed group (no list of seeds)") from None
    return [Member(seed=s, path=seed_folder(path, s)) for s in seeds]


def write_group(path: Path, seeds: Sequence[int], config: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / GROUP_FILE, json.dumps({"seeds": list(seeds), "config": config}, indent=1) + "\n")
