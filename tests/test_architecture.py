"""ARCHITECTURE.md and README's flow table name the file that owns each step: every path they name exists, so
a move or a rename that forgets them fails here."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
while not (REPO / "pyproject.toml").is_file():  # wherever this file sits under tests/
    REPO = REPO.parent
PACKAGE = REPO / "src" / "lmlab"


def named_paths(text: str) -> set[str]:
    """Backticked repository paths: `run/plan.py`, `training/checkpoint/`, `tests/test_contract.py`."""
    return {m for m in re.findall(r"`([\w./]+(?:\.py|/))`", text) if "/" in m or m.endswith(".py")}


@pytest.mark.parametrize("document", ["ARCHITECTURE.md", "README.md"])
def test_every_named_file_exists(document):
    names = named_paths((REPO / document).read_text(encoding="utf-8"))
    assert "run/pipeline.py" in names or document == "README.md"
    missing = sorted(n for n in names if not any((base / n).exists() for base in (PACKAGE, REPO, REPO / "src")))
    assert not missing, missing
