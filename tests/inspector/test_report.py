"""report.html parses, and every embedded image is a PNG that decodes."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import torch
from inspect_helpers import TinySelfAttention, TokenwiseLM, tiny_data, tiny_mlp, train
from PIL import Image
from torch import nn

from lmlab.inspector import Finding, find_problems
from lmlab.inspector.report import write_report


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self._in_h2, self.items = [], [], False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self._in_h2 = tag == "h2"
        if tag == "li":
            self.items.append(attrs.get("class"))

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


class _ConvBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(16, 16, 3, padding=2)
        self.act = nn.Tanh()

    def forward(self, x):  # (B, T, C) -> causal conv over time
        y = self.conv(x.transpose(1, 2))[..., : x.size(1)]  # (B, C, T)
        return self.act(y).transpose(1, 2)


def test_report_parses_and_every_image_decodes(tiny_names, tmp_path):
    data = tiny_data(tiny_names)
    torch.manual_seed(0)
    body = nn.Sequential(TinySelfAttention(16, 2), _ConvBody(), nn.Linear(16, 16), nn.ReLU())
    stats, findings, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, body), data, steps=12, every=3)
    findings = findings + [Finding("warning", "x", "body.<2>", "a <planted> finding", {}, "nothing & all")]
    path = write_report(tmp_path, stats, findings)
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    for heading in ("Findings", "Loss and learning rate", "Activation histograms per layer",
                    "Update:data ratio (should be near 1e-3)", "Gradients", "Dead units (never fired over the window)"):
        assert heading in parser.headings
    assert any(h.startswith("Attention (first example)") for h in parser.headings)
    assert any(h.startswith("Conv feature maps") for h in parser.headings)
    assert "warning" in parser.items and "&lt;planted&gt;" in path.read_text()
    assert len(parser.images) >= 7
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.format == "PNG" and image.size[0] > 100


def test_healthy_report_says_so(tiny_names, tmp_path):
    data = tiny_data(tiny_names)
    # A model of several tokens trained until it beats the counted bigram (a shorter run learned nothing yet)
    stats, _, _ = train(tiny_mlp(data), data, steps=60, every=5)
    text = write_report(tmp_path, stats, find_problems(stats)).read_text()
    assert "No problems found" in text


def test_report_shows_thresholds_notes_baselines_and_token_labels(tiny_names, tmp_path):
    from lmlab.inspector import inspect_findings
    from lmlab.inspector.report_plots import token_labels

    data = tiny_data(tiny_names)
    torch.manual_seed(0)
    stats, _, _ = train(TokenwiseLM(data.tokenizer.vocab_size, 16, TinySelfAttention(16, 2)), data, steps=6, every=2)
    data.tokenizer.save(tmp_path / "tokenizer.json")
    text = write_report(tmp_path, stats, inspect_findings(stats)).read_text()
    parser = _Collect()
    parser.feed(text)
    assert "Thresholds" in parser.headings and "saturation" in text and "update:data" in text
    assert "note" in parser.items and "counted bigram" in text  # the baselines beside the loss
    labels = token_labels(stats, data.tokenizer)
    assert labels == [data.tokenizer.decode([i], skip_special_tokens=False) or f"<{i}>"
                      for i in stats.attention_tokens]
    assert any(label.isalpha() for label in labels)


def test_twelve_layer_legends_name_the_worst_and_group_the_rest():
    from lmlab.inspector import InspectorStats
    from lmlab.inspector.report_plots import MAX_NAMED, _figure, _lines, update_ratio_plot

    steps = [0, 10, 20, 30]
    params = {f"h.{i}.{part}.weight": {"shape": [8, 8], "step": steps, "update_data": [-2.0 - 0.01 * i] * 4}
              for i in range(12) for part in ("attn", "mlp")}
    params["h.7.mlp.weight"]["update_data"] = [-6.0] * 4  # far from the 1e-3 band: named
    stats = InspectorStats.from_dict({"params": params})
    fig, axes = _figure()
    ax = axes[0][0]
    _lines(ax, {n: (p.step, p.update_data) for n, p in stats.params.items()},
           badness=lambda ys: abs(sum(ys) / len(ys) + 3))
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) <= MAX_NAMED + 2 and "h.7.mlp.weight (worst)" in labels
    assert any(label.startswith("h.#.attn.weight (") for label in labels)
    assert update_ratio_plot(stats)
    from lmlab.inspector.update_rules import update_band

    (band,) = update_band(stats)
    assert "h.#.attn.weight (12) at 10^-2." in band.what and "above" in band.what


def test_attention_maps_of_a_lines_example_end_where_it_ends(tiny_names):
    data = tiny_data(tiny_names)
    torch.manual_seed(0)
    model = TokenwiseLM(data.tokenizer.vocab_size, 16, TinySelfAttention(16, 2))
    stats, _, _ = train(model, data, steps=2, every=1, batch_size=64)
    length, tokens = stats.attention_length, stats.attention_tokens
    boundary = data.tokenizer.boundary_id
    # The map ends at the example's closing boundary; what follows in the batch's matrix is padding.
    assert 2 <= length <= len(tokens) and tokens[length - 1] == boundary and tokens[0] == boundary
    assert boundary not in tokens[1 : length - 1]
    from lmlab.inspector.report_plots import maps_plots

    assert maps_plots(stats.attention_example, "Attention", per_head=True, length=length)
