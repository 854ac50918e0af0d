"""Look inside training: collect (the Inspector callback, its hooks and probes, one InspectorStats record),
judge (health rules, each registered once, giving Findings) and show (findings.json and report.html)."""

from lmlab.inspector.finding import Finding, Rule, format_finding, is_problem
from lmlab.inspector.findings import find_notes, find_problems, inspect_findings
from lmlab.inspector.inspector import Inspector
from lmlab.inspector.probes import causality_probe
from lmlab.inspector.report import load_findings, save_findings
from lmlab.inspector.stats import STATS_FILE, InspectorStats, load_stats, save_stats

__all__ = ["STATS_FILE", "Finding", "Inspector", "InspectorStats", "Rule", "causality_probe", "find_notes",
           "find_problems", "format_finding", "inspect_findings", "is_problem", "load_findings", "load_stats",
           "save_findings", "save_stats"]
