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


def test_ci_runs_the_readmes_test_command():
    """.ci/run installs the test extra, then runs the README's test command: the quick start's second command
    ends with the command CI runs, so the two cannot drift apart."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in quick_start.splitlines() if line.strip() and not line.startswith("#")]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and commands[1].endswith(" && " + ci[-1]), (commands, ci[-1])
    assert 'pip install -e ".[test]"' in commands[1] and '-e ".[test]"' in " ".join(ci)
