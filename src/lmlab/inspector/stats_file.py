"""inspect.json: the inspector's statistics, kept as short lists of compact floats (histograms of HIST_BINS
bins, maps cut to MAX_MAP rows and columns), saved to and read from the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATS_FILE = "inspect.json"
HIST_BINS = 40
MAX_MAP = 32  # attention maps and conv feature maps are cut to this many rows/columns for the report


def _r(x: float) -> float:
    """Compact float for JSON: 5 significant digits. NaN and inf are kept (Python's json writes them as
    NaN/Infinity and reads them back), because a non-finite statistic is itself a finding."""
    return float(f"{x:.5g}")


def save_stats(stats: dict[str, Any], path: Path) -> None:
    from lmlab.files import atomic_write_text

    atomic_write_text(path, json.dumps(stats, separators=(",", ":")) + "\n")


def load_stats(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
