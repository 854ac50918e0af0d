"""Look inside training: per-layer statistics (Inspector), health rules (findings) and the HTML report."""

from lmlab.inspector.findings import find_notes, find_problems, format_finding, inspect_findings, is_problem
from lmlab.inspector.inspector import Inspector
from lmlab.inspector.probes import causality_probe
from lmlab.inspector.stats_file import STATS_FILE, load_stats, save_stats

FINDINGS_FILE = "findings.json"

__all__ = ["FINDINGS_FILE", "STATS_FILE", "Inspector", "causality_probe", "find_notes", "find_problems",
           "format_finding", "inspect_findings", "is_problem", "load_stats", "save_stats"]
