"""The checks of ``meridian torture``, on plain values: a history of list-append writes and
the final copies of every document on each of its holders → what held and what did not (the
other workloads' checks are in :mod:`app.tools.torture_check_workloads`).

Every write appends one unique element to one document's root array ``items``. Its outcome,
as the client saw it:

* ``ok``: acknowledged (200, or 202: committed where it was sent, its durability level not
  reached in time) — it must be present exactly once on every holder;
* ``fail``: certainly not applied (the node refused it with a 4xx, or the connection was never
  made) — it must be present nowhere;
* ``info``: indeterminate (a timeout, a dropped connection, a 5xx: it may have been applied) —
  present at most once.

An element nobody wrote is a phantom. Holders of one document must also agree on its digest
(the canonical state's SHA-256): they converged. :func:`check` returns a :class:`Verdict`;
nothing here does I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Copy", "Op", "Outcome", "Verdict", "check", "outcome_of"]

Outcome = Literal["ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Op:
    """One write of the history."""

    #: The element appended: unique over the whole run.
    value: str
    doc: str
    #: The node the client sent it to.
    node: str
    outcome: Outcome
    #: Monotonic seconds since the run started, when it was sent and answered.
    start: float
    end: float
    status: int | None = None
    #: The requested durability level.
    level: str = "local"
    error: str = ""
    #: The workload that wrote it and what it did (see :mod:`app.tools.torture_check_workloads`:
    #: ``append``, ``increment``, ``insert``, ``set``, ``delete`` a map key, ``drop`` a document).
    workload: str = "list-append"
    kind: str = "append"
    #: A counter increment's amount; the value a map ``set`` gives its key.
    amount: int = 0
    #: From the answer: the incarnation written (deletes: the one deleted), whether the write
    #: changed the document, and the node that served it (``X-Meridian-Served-By``).
    incarnation: int | None = None
    changed: bool | None = None
    served_by: str = ""
    #: From the answer: whether the serving node created the document (it had no live copy).
    created: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "doc": self.doc,
            "node": self.node,
            "outcome": self.outcome,
            "start": round(self.start, 4),
            "end": round(self.end, 4),
            "status": self.status,
            "level": self.level,
            "error": self.error,
            "workload": self.workload,
            "kind": self.kind,
        }
        if self.amount:
            out["amount"] = self.amount
        if self.incarnation is not None:
            out["incarnation"] = self.incarnation
        if self.changed is not None:
            out["changed"] = self.changed
        if self.served_by:
            out["served_by"] = self.served_by
        if self.created is not None:
            out["created"] = self.created
        return out


@dataclass(frozen=True, slots=True)
class Copy:
    """One holder's copy of one document: None items when it has none (a 404)."""

    items: tuple[str, ...] | None
    digest: str | None = None


def outcome_of(status: int | None, error: str = "") -> Outcome:
    """A write's outcome from its answer's status (None: no answer). ``error`` names the
    exception when there was none: ``connect`` means the request never reached the node."""
    if status is None:
        return "fail" if error == "connect" else "info"
    if status in (200, 202):
        return "ok"
    if 400 <= status < 500 and status not in (408, 499):
        return "fail"
    return "info"  # 5xx (504 forward_timeout: a holder may have applied it), 408, 499


@dataclass(slots=True)
class Verdict:
    """What the checks found; ``ok`` when every one held."""

    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    #: Indeterminate writes found applied (on at least one holder).
    indeterminate_applied: int = 0
    #: (doc, node, value): an acknowledged element missing from a holder.
    lost: list[tuple[str, str, str]] = field(default_factory=list)
    #: (doc, node, value, times): an element present more than once in a copy.
    duplicated: list[tuple[str, str, str, int]] = field(default_factory=list)
    #: (doc, node, value): a refused write's element found in a copy.
    refused_present: list[tuple[str, str, str]] = field(default_factory=list)
    #: (doc, node, value): an element no write of the history appended.
    phantoms: list[tuple[str, str, str]] = field(default_factory=list)
    #: (doc, node): a holder without a copy of a document that has acknowledged writes.
    missing_copies: list[tuple[str, str]] = field(default_factory=list)
    #: doc -> digest per holder, for documents whose holders disagree.
    divergent: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.refused_present
            or self.phantoms
            or self.missing_copies
            or self.divergent
        )

    def problems(self) -> list[str]:
        """One line per kind of problem found, with up to 5 examples each."""
        lines = []
        kinds: list[tuple[str, list[Any]]] = [
            ("acknowledged elements lost", self.lost),
            ("elements present more than once", self.duplicated),
            ("refused writes present", self.refused_present),
            ("elements nobody wrote", self.phantoms),
            ("holders without a copy", self.missing_copies),
            ("documents whose holders disagree", list(self.divergent.items())),
        ]
        for name, found in kinds:
            if found:
                lines.append(f"{len(found)} {name}, e.g. {found[:5]}")
        return lines


def check(
    ops: Iterable[Op],
    copies: Mapping[str, Mapping[str, Copy]],
) -> Verdict:
    """Checks the history ``ops`` against ``copies`` (doc -> holder -> its copy)."""
    verdict = Verdict()
    by_value: dict[str, Op] = {}
    by_doc: dict[str, list[Op]] = {}
    for op in ops:
        by_value[op.value] = op
        by_doc.setdefault(op.doc, []).append(op)
        if op.outcome == "ok":
            verdict.acknowledged += 1
        elif op.outcome == "fail":
            verdict.failed += 1
        else:
            verdict.indeterminate += 1
    applied: set[str] = set()
    for doc, holders in sorted(copies.items()):
        written = by_doc.get(doc, [])
        digests = {node: copy.digest for node, copy in holders.items()}
        if len(set(digests.values())) > 1:
            verdict.divergent[doc] = digests
        for node, copy in sorted(holders.items()):
            if copy.items is None:
                if any(op.outcome == "ok" for op in written):
                    verdict.missing_copies.append((doc, node))
                continue
            counts = Counter(copy.items)
            for value, times in sorted(counts.items()):
                wrote = by_value.get(value)
                if wrote is None or wrote.doc != doc:
                    verdict.phantoms.append((doc, node, value))
                    continue
                if times > 1:
                    verdict.duplicated.append((doc, node, value, times))
                if wrote.outcome == "fail":
                    verdict.refused_present.append((doc, node, value))
                elif wrote.outcome == "info":
                    applied.add(value)
            for op in written:
                if op.outcome == "ok" and op.value not in counts:
                    verdict.lost.append((doc, node, op.value))
    verdict.indeterminate_applied = len(applied)
    return verdict
