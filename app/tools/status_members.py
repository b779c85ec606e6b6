"""The member list in ``meridian status``: the nodes that joined at run time (``regions.toml``
does not list them, so the first answers name them) and a table of every member."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .status import NodeAnswer, Target

__all__ = ["member_rows", "members_of", "unasked_members"]


def members_of(answers: Sequence[NodeAnswer]) -> dict[str, dict[str, Any]]:
    """Every member the answering nodes list, merged by the newest stamp of each."""
    merged: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for entry in (answer.view or {}).get("members", []) or []:
            node = str(entry.get("node"))
            known = merged.get(node)
            order = (entry.get("incarnation", 0), entry.get("stamp") or [0, ""])
            if known is None or order > (known.get("incarnation", 0), known.get("stamp")):
                merged[node] = entry
    return merged


def unasked_members(answers: Sequence[NodeAnswer]) -> list[Target]:
    """The live members that no answer came from and no target named (nodes that joined at
    run time), at their member address."""
    from .status import Target

    asked = {a.name for a in answers} | {a.target.node for a in answers if a.target.node}
    addresses = {a.target.address for a in answers}
    return [
        Target(f"http://{entry['address']}", node, str(entry.get("region")))
        for node, entry in sorted(members_of(answers).items())
        if entry.get("state") != "removed"
        and node not in asked
        and entry.get("address") not in addresses
    ]


def member_rows(answers: Sequence[NodeAnswer]) -> list[list[str]]:
    """One row per member that is not ``active`` (joining, leaving, removed): the changes in
    progress, and the tombstones."""
    return [
        [
            node,
            str(entry.get("region")),
            str(entry.get("address")),
            str(entry.get("state")),
            str(entry.get("incarnation")),
        ]
        for node, entry in sorted(members_of(answers).items())
        if entry.get("state") != "active"
    ]
