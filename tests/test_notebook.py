"""How lmlab shows in Jupyter: rich HTML for a run, its findings (dicts or objects), a comparison and the
report; live curves that update one display in place; nothing of it in a terminal."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

import lmlab
from lmlab.compare import compare_runs
from lmlab.notebook import Comparison, Findings, LiveCurves, curves_png, findings_html, in_notebook

TINY_GPT = {"model": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16},
            "train": {"max_steps": 12, "eval_interval": 4, "log_interval": 2, "batch_size": 8}}
TINY_MLP = {"model": {"name": "mlp", "n_embd": 4, "n_hidden": 16},
            "train": {"max_steps": 8, "eval_interval": 4, "log_interval": 4, "batch_size": 8}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A GPT watched by the inspector and an MLP that was not, on the same small names file."""
    root = tmp_path_factory.mktemp("notebook")
    names = root / "names.txt"
    names.write_text("\n".join(["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper",
                                "evelyn", "abigail", "emily", "ella", "elizabeth", "camila", "luna"] * 4) + "\n")
    gpt = lmlab.train({"data": {"source": str(names)}, **TINY_GPT}, out=root / "gpt", inspect=2)
    mlp = lmlab.train({"data": {"source": str(names)}, **TINY_MLP}, out=root / "mlp", inspect=False)
    return gpt, mlp


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_a_run_shows_its_summary_curves_and_findings(runs):
    gpt, mlp = runs
    page = gpt._repr_html_()
    assert "gpt run <code>gpt</code>" in page
    assert f"{gpt.summary['nll']['val']:.4f}" in page and f"{gpt.summary['parameters']:,}" in page
    images = pngs(page)
    assert len(images) == 1 and images[0].startswith(b"\x89PNG")
    assert "Findings" in page and "inspector did not watch" not in page
    assert "inspector did not watch" in mlp._repr_html_()
    reloaded = lmlab.load(gpt.run_dir.path)._repr_html_()
    assert f"{gpt.summary['nll']['val']:.4f}" in reloaded


def test_findings_render_from_dicts_and_objects_alike(runs):
    @dataclass
    class Finding:
        rule: str
        severity: str
        layer: str | None
        what: str
        numbers: dict
        fix: str
        since_step: int | None = None

    as_dict = {"rule": "dead_units", "severity": "warning", "layer": "h.0", "what": "40% of <units> never fire",
               "numbers": {"fraction": 0.4}, "fix": "lower the learning rate", "since_step": 3}
    from_dict = findings_html([as_dict, {**as_dict, "severity": "note", "rule": "baselines", "layer": None}])
    from_object = findings_html([Finding(**as_dict), Finding(**{**as_dict, "severity": "note",
                                                                 "rule": "baselines", "layer": None})])
    assert from_dict == from_object
    assert "1 warning, 1 note." in from_dict and "&lt;units&gt;" in from_dict  # escaped
    assert "fraction 0.4" in from_dict and "lower the learning rate" in from_dict and "from step 3" in from_dict
    assert "No problems found" in findings_html([])
    gpt, _ = runs
    assert isinstance(gpt.findings, Findings) and isinstance(gpt.inspect(), Findings)
    assert gpt.findings._repr_html_() == findings_html(list(gpt.findings))


def test_a_comparison_shows_a_table_with_the_best_in_bold_and_the_curves(runs):
    gpt, mlp = runs
    rows = compare_runs([gpt.run_dir.path, mlp.run_dir.path])
    assert isinstance(rows, Comparison) and isinstance(rows, list)
    page = rows._repr_html_()
    best = min(rows, key=lambda r: r["nll"]["test"])
    assert f"<b>{best['nll']['test']:.4f}</b>" in page
    assert page.count("<b>") == 1
    assert "<code>gpt</code>" in page and "<code>mlp</code>" in page
    assert len(pngs(page)) == 1


def test_the_report_shows_inline_and_is_rebuilt_when_missing(runs):
    gpt, mlp = runs
    report = gpt.report()
    assert report.path.name == "report.html"
    frame = report._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and "<h2>Findings</h2>" not in frame  # escaped into the frame
    assert html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1)) == report.path.read_text()
    report.path.unlink()
    assert gpt.report().path.is_file()
    with pytest.raises(lmlab.errors.CheckpointError, match="no inspector statistics"):
        mlp.report()


def test_no_live_curves_outside_a_notebook(runs):
    assert not in_notebook()
    gpt, _ = runs
    assert not any(isinstance(c, LiveCurves) for c in gpt.trainer.callbacks)


class FakeHandle:
    def __init__(self, log):
        self.log = log

    def update(self, page):
        self.log.append(("update", page.data))


def test_live_curves_update_one_display_in_place(tmp_path, monkeypatch, runs):
    """A kernel is faked: lmlab.train adds LiveCurves, which displays once and then only updates."""
    display_calls: list = []
    ipython = pytest.importorskip("IPython.display")

    def display(page, display_id=False):
        assert display_id is True
        display_calls.append(("display", page.data))
        return FakeHandle(display_calls)

    monkeypatch.setattr(ipython, "display", display)
    monkeypatch.setattr("lmlab.notebook.LIVE_REDRAW_SECONDS", 0.0)
    monkeypatch.setattr("lmlab.run.pipeline.in_notebook", lambda: True)
    gpt, _ = runs
    run = lmlab.train({"data": {"source": gpt.config.data.source}, **TINY_GPT}, out=tmp_path / "live",
                      inspect=False)
    assert any(isinstance(c, LiveCurves) for c in run.trainer.callbacks)
    kinds = [kind for kind, _ in display_calls]
    assert kinds[0] == "display" and set(kinds[1:]) == {"update"}
    assert len(kinds) == 3 + 1  # evaluations at 4, 8 and 12, then the end of training
    assert "step 12 of 12" in display_calls[-1][1] and len(pngs(display_calls[-1][1])) == 1


def test_curves_png_draws_lines_levels_and_nothing():
    assert curves_png([("a", [], "-")]) is None
    png = curves_png([("train", [(1, 3.0), (2, 2.5)], "-"), ("bigram", [(0, 2.4)], "--")])
    assert base64.b64decode(png).startswith(b"\x89PNG")


def test_drawing_leaves_a_notebooks_plot_backend_alone(runs, tmp_path):
    """The report's plots and the comparison's PNG draw on their own canvas: after them, pyplot still uses
    the backend the user had (a notebook's inline one), so the user's own plt.show() still shows."""
    import matplotlib

    from lmlab.compare import plot_val_curves

    gpt, mlp = runs
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        gpt.inspect(rebuild_report=True)
        plot_val_curves(compare_runs([gpt.run_dir.path, mlp.run_dir.path]), tmp_path / "curves.png")
        assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)


def test_an_unfinished_run_says_where_it_stopped(runs):
    from lmlab.notebook import run_html

    gpt, _ = runs
    unfinished = SimpleNamespace(run_dir=gpt.run_dir, config=gpt.config, tokenizer=gpt.tokenizer, step=7,
                                 summary=None, metrics=gpt.metrics[:3], findings=None, interrupted=True)
    page = run_html(unfinished)
    assert "not finished: checkpoint at step 7 (interrupted)" in page and "val NLL" not in page
