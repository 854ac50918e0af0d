"""docs/tour.ipynb runs from top to bottom in a real Jupyter kernel (nbclient), quick sizes, on this checkout's
sources: any cell that raises fails the test, so the tour cannot rot. Its rich outputs are checked too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOUR = REPO / "docs" / "tour.ipynb"

nbformat = pytest.importorskip("nbformat", reason="lmlab[notebook] is not installed")
nbclient = pytest.importorskip("nbclient", reason="lmlab[notebook] is not installed")
pytest.importorskip("ipykernel", reason="lmlab[notebook] is not installed")
pytest.importorskip("transformer_lens", reason="the tour's last section needs lmlab[interp]")


def outputs(cell) -> tuple[str, str]:
    """(the HTML the cell displayed, its stderr text)."""
    shown = "".join(str(o.get("data", {}).get("text/html", "")) for o in cell.get("outputs", []))
    errors = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr")
    return shown, errors


def test_the_tour_runs_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_TOUR_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(TOUR, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first cell that fails

    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = [outputs(c)[0] for c in code]
    assert sum("of 40: loss" in page for page in shown) == 3  # each training cell drew its live curves
    assert sum("gpt run <code>gpt</code>" in page for page in shown) == 1  # the GPT shows as a run
    assert any("<th" in page and "fix</th>" in page or "No problems found" in page for page in shown)
    assert any(page.startswith("<iframe srcdoc=") for page in shown)  # the report, inline
    assert any("bits/char</th>" in page for page in shown)  # the comparison
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the attention plot (the user's own plt.show) did not show"
    text = "".join(o.get("text", "") for c in code for o in c.get("outputs", []))
    assert "max |TransformerLens - lmlab| logit:" in text
    difference = float(text.split("max |TransformerLens - lmlab| logit:")[1].split()[0])
    assert difference <= 1e-4
    assert (tmp_path / "runs" / "tour" / "gpt" / "report.html").is_file()
    tracebacks = [outputs(c)[1] for c in code if "Traceback" in outputs(c)[1]]
    assert not tracebacks, tracebacks
