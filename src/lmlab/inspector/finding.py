"""What the health rules hand over: a `Finding` (one problem or note in plain words, with its numbers and a
fix) and the `Rule` that produced it. A rule is registered once, by decorating its check function with
`@rule(priority=..., threshold=...)`: the function's name is the rule's name in findings.json, the priority
orders causes before consequences, the threshold text goes into the report's table, and `explains` names
findings this one causes (they are worded as its consequence and listed after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lmlab.inspector.stats import InspectorStats

Severity = Literal["error", "warning", "note"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding. Written to findings.json as a dict with these keys in this order (`to_dict`)."""

    severity: Severity
    rule: str
    layer: str | None
    what: str
    numbers: dict[str, Any]
    fix: str
    since_step: int | None = None

    @property
    def is_problem(self) -> bool:
        return self.severity in ("error", "warning")

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "rule": self.rule, "layer": self.layer, "what": self.what,
                "numbers": self.numbers, "fix": self.fix, "since_step": self.since_step}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Finding:
        return cls(severity=raw["severity"], rule=raw["rule"], layer=raw.get("layer"), what=raw.get("what", ""),
                   numbers=dict(raw.get("numbers") or {}), fix=raw.get("fix") or "",
                   since_step=raw.get("since_step"))

    def reworded(self, **changes: Any) -> Finding:
        return replace(self, **changes)


Check = Callable[["InspectorStats"], list[Finding]]
# (the cause's finding, the consequence's) -> the consequence as worded once its cause is known, or None when
# this cause does not explain this consequence after all
Explain = Callable[[Finding, Finding], Finding | None]


@dataclass(frozen=True, slots=True, eq=False)  # one object per rule: compared and hashed by identity
class Rule:
    """One health rule: its name (that of its check function), where it sorts among findings that appear at
    the same step (lower first: causes before consequences), what it compares against in words (for the
    report; empty for rules that only write notes), its check, and the findings it explains."""

    name: str
    priority: int
    threshold: str
    check: Check | None
    explains: dict[str, Explain] = field(default_factory=dict)

    def __call__(self, stats: InspectorStats) -> list[Finding]:
        return self.check(stats) if self.check is not None else []

    def finding(self, severity: Severity, layer: str | None, what: str, numbers: dict[str, Any], fix: str = "",
                since: int | None = None) -> Finding:
        return Finding(severity, self.name, layer, what, numbers, fix, since)


RULES: dict[str, Rule] = {}  # every registered rule by name, in registration order


def rule(*, priority: int, threshold: str = "", explains: dict[Rule, Explain] | None = None,
         checks: bool = True) -> Callable[[Check], Rule]:
    """Register the decorated function as a rule named after it. `checks=False`: a rule whose findings are
    notes written elsewhere (find_notes), registered for its name only."""

    def register(check: Check) -> Rule:
        name = check.__name__
        if name in RULES:
            raise ValueError(f"rule {name!r} is registered twice")
        registered = Rule(name, priority, threshold, check if checks else None,
                          {consequence.name: how for consequence, how in (explains or {}).items()})
        RULES[name] = registered
        return registered

    return register


def note_rule(name: str) -> Rule:
    """A name for notes that no check function writes (find_notes' baselines, unwatched layers, ...)."""
    if name in RULES:
        return RULES[name]
    RULES[name] = Rule(name, priority=99, threshold="", check=None)
    return RULES[name]


def format_finding(finding: Finding) -> str:
    where = f" {finding.layer}:" if finding.layer else ""
    text = f"[{finding.severity}]{where} {finding.what}."
    return text + (f"\n    fix: {finding.fix}." if finding.fix else "")


def is_problem(finding: Finding) -> bool:
    return finding.is_problem
