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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import CheckpointError, LmlabError
from lmlab.experiments.groups import GROUP_FILE, is_finished, is_group, seed_folder, write_group
from lmlab.files import read_json_file
from lmlab.run.config import RunConfig, merge_layers, resolve_config
from lmlab.run.data import RunData, prepare_data
from lmlab.run.folder import RunDir

if TYPE_CHECKING:
    from lmlab.run import Run

log = logging.getLogger(__name__)

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
    as in a group that was never interrupted. An interrupted run ends the group early (its Run comes last,
    with `interrupted=True`)."""
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
        if run.interrupted:  # Ctrl-C or SIGTERM: stop here; the same call again trains what is missing
            break
        if on_seed_end is not None:
            on_seed_end(seed, run)
    return runs


def _recorded_config(path: Path) -> dict[str, Any] | None:
    """The config a group folder was trained with (None: no group there)."""
    if not is_group(path):
        return None
    try:
        return read_json_file(path / GROUP_FILE).get("config")
    except (LmlabError, AttributeError):
        return None
