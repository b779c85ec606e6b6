"""What a run did (:class:`Report`: the figures docs/fuzzing.md shows) and what stopped it
(:class:`Failure`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .actions import Action, Outcome, RawWs

__all__ = ["Failure", "Report", "format_report"]


@dataclass(slots=True)
class Failure:
    mode: str
    batch: int
    problem: str
    offending: list[Action]
    actions: list[Action]
    log: list[str]
    reproducer: Path | None = None


@dataclass(slots=True)
class Report:
    """What a run did (the figures docs/fuzzing.md shows)."""

    seed: int
    seconds: float = 0.0
    batches: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    by_route: dict[str, Counter[int]] = field(default_factory=dict)
    close_codes: Counter[int] = field(default_factory=Counter)
    frames: int = 0
    raw_frames: int = 0
    expects: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    #: Known problems seen (KNOWN): tolerated, counted.
    tolerated: Counter[str] = field(default_factory=Counter)
    rss_kb: dict[str, list[int]] = field(default_factory=dict)
    slowest: dict[str, float] = field(default_factory=dict)
    documents_swept: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    #: Messages the watchers received.
    watched: int = 0
    failure: Failure | None = None

    def record(self, action: Action, outcome: Outcome) -> None:
        self.actions[action.route] += 1
        self.expects[action.expect] += 1
        route = self.by_route.setdefault(action.route, Counter())
        for status in outcome.statuses:
            self.statuses[status] += 1
            route[status] += 1
        self.close_codes.update(outcome.close_codes)
        if isinstance(action, RawWs):
            self.raw_frames += outcome.frames_sent
        else:
            self.frames += outcome.frames_sent
        self.slowest[action.route] = max(self.slowest.get(action.route, 0.0), outcome.seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "batches": dict(self.batches),
            "actions": sum(self.actions.values()),
            "by_route": {r: dict(sorted(c.items())) for r, c in sorted(self.by_route.items())},
            "actions_by_route": dict(sorted(self.actions.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "close_codes": dict(sorted(self.close_codes.items())),
            "frames": self.frames,
            "raw_frames": self.raw_frames,
            "expects": dict(self.expects),
            "warnings": dict(self.warnings),
            "tolerated": dict(self.tolerated),
            "rss_kb": self.rss_kb,
            "slowest_seconds": {r: round(s, 3) for r, s in sorted(self.slowest.items())},
            "documents_swept": dict(self.documents_swept),
            "restarts": dict(self.restarts),
            "watched_messages": self.watched,
            "failure": None if self.failure is None else self.failure.problem,
        }


def format_report(report: Report) -> str:
    total = sum(report.actions.values())
    lines = [
        f"seed {report.seed}: {total:,} actions in {sum(report.batches.values())} batches, "
        f"{report.seconds:.0f} s",
        f"  batches by mode: {dict(report.batches)}",
        f"  WebSocket frames sent: {report.frames:,} (+ {report.raw_frames:,} hand-built); "
        f"{report.watched:,} messages to the watchers",
        f"  statuses: {dict(sorted(report.statuses.items()))}",
        f"  close codes: {dict(sorted(report.close_codes.items()))}",
        f"  expectations: {dict(report.expects)}",
        f"  node warnings by logger: {dict(report.warnings)}",
        f"  known problems tolerated: {dict(report.tolerated)}",
        f"  documents read at the end: {dict(report.documents_swept)}",
        f"  restarts (checked after each): {dict(report.restarts)}",
    ]
    for mode, (start, end, peak) in report.rss_kb.items():
        lines.append(
            f"  RSS {mode}: {start / 1024:.0f} MiB after seeding, {end / 1024:.0f} MiB at the "
            f"end, {peak / 1024:.0f} MiB at most"
        )
    lines.append("  actions by route (statuses):")
    for route in sorted(report.actions):
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(report.by_route[route].items()))
        lines.append(
            f"    {route:40} {report.actions[route]:7,}  slowest "
            f"{report.slowest[route]:.2f}s  {statuses}"
        )
    return "\n".join(lines)
