"""The checks of ``meridian torture``'s workloads other than list-append, on plain values: a
history of :class:`~app.tools.torture_check.Op` and every holder's final copy of every
document (:class:`Held`) → :class:`Findings`. Nothing here does I/O.

Outcomes are the list-append ones (:func:`~app.tools.torture_check.outcome_of`): ``ok``
acknowledged, ``fail`` certainly not applied, ``info`` indeterminate. Every workload has
documents of its own, and each check holds on **every holder** of each of them, once the
copies converged (every holder in the same state, with the same digest):

* **counters** (``torture-counter-*``, root map ``counter``). The JSON operations have no
  increment, so a counter is a map of unique keys: an increment by ``n`` (1-3) is one ``set``
  of a key no other increment uses (``"c3-17": n``), and the counter's value is the sum of the
  map's values. The value is at least the acknowledged increments' sum and at most that plus
  the indeterminate ones'; each key present is one that was written, with its amount, and
  every acknowledged key is present (none refused).
* **text** (``torture-text-*``, root text ``body``): ``insert_text`` at index 0 of a unique
  token ``<c3-17>``. The text is a concatenation of tokens (nothing else in it); every
  acknowledged token appears exactly once, no refused token appears, an indeterminate one at
  most once.
* **maps** (``torture-map-*``, root map ``map``): ``set`` of a unique key, and later (once the
  set was acknowledged) ``delete`` of some of a client's keys, sent to the node the set went
  to. An acknowledged set whose key no delete was sent for (acknowledged or indeterminate) is
  present with its value; an acknowledged delete whose answer says it ``changed`` the
  document (the node that served it held the key, so Yjs deleted that very entry) leaves the
  key absent everywhere. An acknowledged delete that changed nothing was served by a copy
  the set had not reached yet: it is concurrent with the set and either outcome is right
  (Yjs deletes only what the deleting copy has seen) — counted, not checked.
* **deletes** (``torture-del-*``, root array ``items``): appends of unique elements and
  ``DELETE`` of the whole document; the next append re-creates it as the next incarnation.
  The rule is the design's (docs/design.md, "Deletion"), by the incarnation each answer names:
  copies keep the greatest of ``(n, live) < (n, deleted) < (n+1, live)``. So on every holder
  the final state is the same; when it is live at incarnation ``F``: every acknowledged
  delete's incarnation is below ``F`` (no delete undone), no acknowledged append names an
  incarnation above ``F`` (none went backwards), every acknowledged append of incarnation
  ``F`` is present exactly once, no append of an earlier incarnation is present (nothing
  resurrected), nothing refused and nothing unwritten is present; when it is deleted, some
  delete was sent. Real-time order alone promises nothing more: a ``DELETE`` is answered once
  one copy committed it (it has no durability level), so an append that starts after that
  answer can still reach a copy the tombstone has not reached, be written into the deleted
  incarnation and be discarded with it ("delete wins within an incarnation"). Those appends
  are counted (``after a delete, written into it``), not failed. One thing the design does
  not allow: a node that holds no copy (a stand-in for a holder that is down, a node keeping
  a hint) creating the document afresh as incarnation 1 — the answer says ``created`` — for a
  write, when an acknowledged write had shown the document at a later incarnation at least
  :data:`GRACE` seconds before, and since then no regions were cut apart, no rolling restart
  ran and the serving node itself was not down: no delete is concurrent with that write, the
  cluster knew the incarnation, yet the write is discarded at hand-off (``acknowledged
  appends into a re-created past incarnation``).
* **yjs** (``torture-yjs-*``, root array ``tokens``): pycrdt documents over ``WS
  /v1/sync/{id}`` push unique tokens. y-websocket has no per-update acknowledgement: a token
  counts as acknowledged once an HTTP read of the document showed it, and, after the heal,
  every token in a client's own document once that client synced it again with a node
  (``synced``); every other token is indeterminate. Every acknowledged or synced token is
  present exactly once; no token is present twice; nothing unwritten is present.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .torture_check import Op

__all__ = [
    "GRACE",
    "HTTP_WORKLOADS",
    "Cut",
    "WORKLOADS",
    "Findings",
    "Held",
    "check_counters",
    "check_deletes",
    "check_maps",
    "check_text",
    "check_yjs",
    "text_tokens",
]

#: Every workload, in the order the report lists them; all but ``yjs`` are HTTP requests.
WORKLOADS = ("list-append", "counters", "text", "maps", "deletes", "yjs")
HTTP_WORKLOADS = WORKLOADS[:-1]

#: Seconds after a write showed a document's incarnation (or after regions were cut apart
#: and healed) by which every connected node can know it.
GRACE = 2.0
#: A token of the text workload: ``<c3-17>``.
TOKEN = re.compile(r"<([^<>]*)>")


@dataclass(frozen=True, slots=True)
class Held:
    """One holder's copy of one document: ``live``, ``deleted`` (404 ``document_deleted``) or
    ``missing`` (404 ``document_not_found``); ``root`` is the workload's root as JSON (None
    when the copy has none)."""

    state: Literal["live", "deleted", "missing"]
    root: Any = None
    incarnation: int | None = None
    digest: str | None = None


@dataclass(slots=True)
class Findings:
    """What one workload's check found: counts for the report, and the problems by kind, each
    with its examples; ``ok`` when there is none."""

    workload: str
    counts: Counter[str] = field(default_factory=Counter)
    problems: dict[str, list[Any]] = field(default_factory=dict)
    #: Kinds of problem found in the history alone: no later reading of the copies changes them.
    settled: set[str] = field(default_factory=set)

    def add(self, kind: str, example: Any, *, settled: bool = False) -> None:
        self.problems.setdefault(kind, []).append(example)
        if settled:
            self.settled.add(kind)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def copies_ok(self) -> bool:
        """No problem a later reading of the copies could undo (waiting cannot help)."""
        return set(self.problems) <= self.settled

    def lines(self) -> list[str]:
        """One line per kind of problem, with up to 5 examples each."""
        return [f"{len(found)} {kind}, e.g. {found[:5]}" for kind, found in self.problems.items()]


Copies = Mapping[str, Mapping[str, Held]]


@dataclass(frozen=True, slots=True)
class Cut:
    """A fault that could keep a node from hearing of a change, from ``start`` to ``end``
    (seconds into the run): regions cut apart or every node restarted in turn (``node``
    None), or one node killed, paused or restarted."""

    start: float
    end: float
    node: str | None = None


def text_tokens(text: str) -> tuple[list[str], str]:
    """The tokens of a text, in order, and whatever is left once they are taken out."""
    return TOKEN.findall(text), TOKEN.sub("", text)


def check_counters(ops: Iterable[Op], copies: Copies) -> Findings:
    """Counters: the value between the acknowledged sum and that plus the indeterminate sum;
    every key present written with its amount, every acknowledged one present."""
    found = Findings("counters")
    for doc, written, holders in _documents(found, ops, copies):
        acked = sum(op.amount for op in written if op.outcome == "ok")
        maybe = sum(op.amount for op in written if op.outcome == "info")
        by_key = {op.value: op for op in written}
        for node, root in _live_roots(found, doc, holders, written, dict):
            value = 0
            for key, amount in sorted(root.items()):
                op = by_key.get(key)
                if op is None:
                    found.add("keys nobody wrote", (doc, node, key))
                    continue
                if op.outcome == "fail":
                    found.add("refused increments present", (doc, node, key))
                if amount != op.amount:
                    found.add("increments with another amount", (doc, node, key, amount))
                value += amount if isinstance(amount, int) else 0
            _lost(found, doc, node, written, root)
            if not acked <= value <= acked + maybe:
                found.add(
                    "counters out of bounds (value, acknowledged, indeterminate)",
                    (doc, node, value, acked, maybe),
                )
    return found


def check_text(ops: Iterable[Op], copies: Copies) -> Findings:
    """Text: nothing but tokens; acknowledged ones exactly once, refused ones never,
    indeterminate ones at most once."""
    found = Findings("text")
    for doc, written, holders in _documents(found, ops, copies):
        by_value = {op.value: op for op in written}
        for node, root in _live_roots(found, doc, holders, written, str):
            tokens, rest = text_tokens(root)
            if rest:
                found.add("text nobody wrote", (doc, node, rest[:40]))
            _elements(found, doc, node, Counter(tokens), by_value)
            _lost(found, doc, node, written, set(tokens))
    return found


def check_maps(ops: Iterable[Op], copies: Copies) -> Findings:
    """Maps: an acknowledged set never deleted is present with its value; the key of an
    acknowledged delete that changed the document is absent; nothing refused or unwritten."""
    found = Findings("maps", Counter({"delete concurrent with its set": 0}))
    for doc, written, holders in _documents(found, ops, copies):
        sets = {op.value: op for op in written if op.kind == "set"}
        deletes = [op for op in written if op.kind == "delete"]
        maybe_deleted = {op.value for op in deletes if op.outcome != "fail"}
        surely_deleted = {op.value for op in deletes if op.outcome == "ok" and op.changed}
        for op in deletes:
            if op.outcome == "ok" and not op.changed:
                found.counts["delete concurrent with its set"] += 1
        for node, root in _live_roots(found, doc, holders, written, dict):
            for key, value in sorted(root.items()):
                wrote = sets.get(key)
                if wrote is None:
                    found.add("keys nobody wrote", (doc, node, key))
                    continue
                if wrote.outcome == "fail":
                    found.add("refused sets present", (doc, node, key))
                if value != wrote.amount:
                    found.add("keys with another value", (doc, node, key, value, wrote.amount))
                if key in surely_deleted:
                    found.add("deleted keys present", (doc, node, key))
            for key, op in sorted(sets.items()):
                if op.outcome == "ok" and key not in maybe_deleted and key not in root:
                    found.add("acknowledged keys lost", (doc, node, key))
    return found


def check_deletes(ops: Iterable[Op], copies: Copies, cuts: Sequence[Cut] = ()) -> Findings:
    """Deletes with re-creation, by incarnation (see the module docstring); ``cuts`` are the
    faults that could keep a node from knowing the document's incarnation."""
    found = Findings(
        "deletes",
        Counter({"append discarded by a delete": 0, "append after a delete, written into it": 0}),
    )
    for doc, written, holders in _documents(found, ops, copies):
        appends = {op.value: op for op in written if op.kind == "append"}
        drops = [op for op in written if op.kind == "drop"]
        _count_unseen_deletes(found, appends.values(), drops)
        _past_incarnations(found, doc, appends.values(), drops, cuts)
        if any(held.state == "deleted" for held in holders.values()) and not any(
            op.outcome != "fail" for op in drops
        ):
            found.add("deleted without a delete", (doc, sorted(holders)))
        discarded: set[str] = set()
        for node, root in _live_roots(found, doc, holders, written, list, deletes=True):
            final = holders[node].incarnation or 0
            present = Counter(str(item) for item in root)
            _elements(found, doc, node, present, appends)
            for value in sorted(present):
                op = appends.get(value)
                if op is not None and op.outcome == "ok" and op.incarnation != final:
                    found.add(
                        "elements of an earlier incarnation present",
                        (doc, node, value, op.incarnation, final),
                    )
            for op in appends.values():
                if op.outcome != "ok" or op.incarnation is None:
                    continue
                if op.incarnation > final:
                    found.add(
                        "incarnations gone backwards (element, written in, final)",
                        (doc, node, op.value, op.incarnation, final),
                    )
                elif op.incarnation == final and op.value not in present:
                    found.add("acknowledged elements lost", (doc, node, op.value))
                elif op.incarnation < final:
                    discarded.add(op.value)
            for op in drops:
                if op.outcome == "ok" and (op.incarnation or 0) >= final:
                    found.add(
                        "deletes undone (delete, incarnation deleted, final live incarnation)",
                        (doc, node, op.value, op.incarnation, final),
                    )
        if all(held.state == "deleted" for held in holders.values()):
            discarded = {op.value for op in appends.values() if op.outcome == "ok"}
        found.counts["append discarded by a delete"] += len(discarded)
    return found


def check_yjs(ops: Iterable[Op], copies: Copies, synced: Mapping[str, set[str]]) -> Findings:
    """Yjs clients: every acknowledged (read back over HTTP) or synced token exactly once,
    no token twice, nothing unwritten (``synced``: doc -> the tokens in the clients' own
    documents after their last sync)."""
    found = Findings("yjs")
    for doc, written, holders in _documents(found, ops, copies, extra=synced):
        by_value = {op.value: op for op in written}
        required = {op.value for op in written if op.outcome == "ok"} | synced.get(doc, set())
        found.counts["token synced at the end"] += len(synced.get(doc, set()))
        for node, root in _live_roots(found, doc, holders, written, list):
            present = Counter(str(item) for item in root)
            _elements(found, doc, node, present, by_value)
            for value in sorted(required - set(present)):
                found.add("acknowledged or synced tokens lost", (doc, node, value))
    return found


# -- shared parts ------------------------------------------------------------------------


def _documents(
    found: Findings,
    ops: Iterable[Op],
    copies: Copies,
    extra: Mapping[str, object] | None = None,
) -> Iterable[tuple[str, list[Op], Mapping[str, Held]]]:
    """Counts the history, then yields each document written (doc, its writes, its holders'
    copies), after checking that its holders agree; a document with acknowledged writes (or
    something in ``extra``, e.g. synced tokens) and no holders is a problem."""
    by_doc: dict[str, list[Op]] = {}
    for op in ops:
        by_doc.setdefault(op.doc, []).append(op)
        found.counts[f"{op.kind} sent"] += 1
        found.counts[f"{op.kind} {op.outcome}"] += 1
    for doc in sorted(set(by_doc) | set(copies) | set(extra or ())):
        written = by_doc.get(doc, [])
        holders = copies.get(doc)
        if not holders:
            if any(op.outcome == "ok" for op in written) or (extra or {}).get(doc):
                found.add("documents without holders", doc)
            continue
        states = {
            node: (held.state, held.incarnation, held.digest) for node, held in holders.items()
        }
        if len(set(states.values())) > 1:
            found.add("documents whose holders disagree", (doc, states))
        yield doc, written, holders


def _live_roots(
    found: Findings,
    doc: str,
    holders: Mapping[str, Held],
    written: list[Op],
    kind: type,
    *,
    deletes: bool = False,
) -> Iterable[tuple[str, Any]]:
    """(holder, root) for each holder with a live copy (an absent root is an empty one of
    ``kind``); a missing copy where a write was acknowledged, a deleted one in a workload
    that deletes nothing, and a root of another type are problems."""
    for node, held in sorted(holders.items()):
        if held.state == "missing":
            if any(op.outcome == "ok" for op in written):
                found.add("holders without a copy", (doc, node))
            continue
        if held.state == "deleted":
            if not deletes:
                found.add("deleted without a delete", (doc, node))
            continue
        root = kind() if held.root is None else held.root
        if not isinstance(root, kind):
            found.add("roots of another type", (doc, node, type(root).__name__))
            continue
        yield node, root


def _elements(
    found: Findings, doc: str, node: str, present: Counter[str], by_value: Mapping[str, Op]
) -> None:
    """Each element present: written by someone, at most once, not refused."""
    for value, times in sorted(present.items()):
        op = by_value.get(value)
        if op is None:
            found.add("elements nobody wrote", (doc, node, value))
            continue
        if times > 1:
            found.add("elements present more than once", (doc, node, value, times))
        if op.outcome == "fail":
            found.add("refused elements present", (doc, node, value))


def _lost(found: Findings, doc: str, node: str, written: list[Op], present: Any) -> None:
    """Every acknowledged write's value in ``present`` (a container of values)."""
    for op in written:
        if op.outcome == "ok" and op.value not in present:
            found.add("acknowledged writes lost", (doc, node, op.value))


def _count_unseen_deletes(found: Findings, appends: Iterable[Op], drops: list[Op]) -> None:
    """Counts the acknowledged appends that started after an acknowledged delete's answer and
    were still written into the incarnation it deleted (or an earlier one): they reached a
    copy the tombstone had not reached. The design discards them; the report shows how many."""
    deleted = [(op.end, op.incarnation or 0) for op in drops if op.outcome == "ok"]
    for op in appends:
        if op.outcome != "ok" or op.incarnation is None:
            continue
        if any(end < op.start and op.incarnation <= gone for end, gone in deleted):
            found.counts["append after a delete, written into it"] += 1


def _past_incarnations(
    found: Findings,
    doc: str,
    appends: Iterable[Op],
    drops: list[Op],
    cuts: Sequence[Cut],
) -> None:
    """Acknowledged appends for which the serving node created the document afresh in an
    incarnation the document had left GRACE seconds before (an acknowledged append of a later
    one, or an acknowledged delete of that one or a later one, answered by then), with no
    cut (regions apart, the serving node down) from then to GRACE after the append's answer."""
    appends = list(appends)
    seen = [(op.end, op.incarnation) for op in appends if op.outcome == "ok"]
    seen += [(op.end, (op.incarnation or 0) + 1) for op in drops if op.outcome == "ok"]
    for op in appends:
        if op.outcome != "ok" or not op.created or op.incarnation is None:
            continue
        later = [
            (end, incarnation)
            for end, incarnation in seen
            if incarnation is not None and incarnation > op.incarnation
            and end + GRACE <= op.start
            and not any(cut.node in (None, op.served_by) and cut.start <= op.end
                        and end <= cut.end + GRACE for cut in cuts)
        ]  # fmt: skip
        if later:
            end, incarnation = max(later)
            found.add(
                "acknowledged appends into a re-created past incarnation "
                "(element, its incarnation, later one, seen at)",
                (doc, op.value, op.incarnation, incarnation, round(end, 2)),
                settled=True,
            )
