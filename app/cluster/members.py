"""This node's copy of the member list: merged, persisted, and turned into placement's topology.

:class:`MemberList` holds the :class:`~app.cluster.membership.Membership` this node knows. It
starts from the nodes ``regions.toml`` lists (every node builds the same entries for them:
``active``, incarnation 1, stamp 0, so the file's nodes need no gossip to agree), plus what
this node saved in ``members.json`` in its data directory, and changes in one way only: by
merging — an entry made here (a join accepted, a leave, a removal) or a list received from a
peer — so every node that has seen the same entries holds the same list.

Entries of regions this node's ``regions.toml`` does not name are refused (logged and counted,
the rest of the list still merges): a member there could hold documents no route reaches.
Every change is written to ``members.json`` (write, fsync, rename) before listeners hear of
it, so a node that restarts knows every member it knew, including tombstones.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

from .membership import MemberEntry, Membership, MembershipError, check_join, topology
from .placement import Stamp, StampClock, Topology

__all__ = ["MEMBERS_FILE", "MemberList", "listed_entries"]

log = logging.getLogger("meridian.members")

#: The file in a node's data directory that keeps its member list.
MEMBERS_FILE = "members.json"


def listed_entries(listed: Collection[tuple[str, str, str]]) -> Membership:
    """The entries of the nodes ``regions.toml`` lists, as (node id, region, address): active,
    incarnation 1, stamp 0 — the same on every node, so they merge as one."""
    return Membership(
        MemberEntry(node, region, address.lower(), "active", 1, Stamp(0, node))
        for node, region, address in listed
    )


class MemberList:
    """The member list as this node knows it, and the topology placement computes from it."""

    def __init__(
        self,
        base: Topology,
        *,
        node_id: str,
        listed: Membership,
        path: Path | None = None,
    ) -> None:
        """``base`` gives regions, latencies, replicas and nodes per region (its members are
        ignored); ``listed`` the entries of ``regions.toml``; ``path`` the file the list is
        kept in (None: not kept). Raises MembershipError when the file is damaged."""
        self.base = base
        self.node_id = node_id
        self.path = path
        #: Stamps for changes made here: later than every stamp seen in the list.
        self.clock = StampClock(node_id)
        #: Called with the new list after each change (replication gossips it, placement
        #: recomputes holders).
        self.on_change: list[Callable[[Membership], None]] = []
        #: Entries received from peers and refused (an unknown region), since start.
        self.refused = 0
        #: Members seen entering each state (a join, an activation, a leave, a removal)
        #: since start, by state.
        self.transitions: Counter[str] = Counter()
        self.membership = listed.merge(self._load())
        self._observe(self.membership)
        #: The topology placement reads: members of every state (only active ones hold).
        self.topology = topology(self.membership, base)

    # -- reading ---------------------------------------------------------------------------

    def get(self, node: str) -> MemberEntry | None:
        return self.membership.get(node)

    @property
    def me(self) -> MemberEntry | None:
        """This node's own entry (None for a node that has not joined)."""
        return self.membership.get(self.node_id)

    @property
    def state(self) -> str | None:
        """This node's own state (None for a node that has not joined)."""
        me = self.me
        return me.state if me is not None else None

    def live(self) -> tuple[MemberEntry, ...]:
        """Every member that is not removed, this node included."""
        return self.membership.live()

    def joining(self) -> tuple[str, ...]:
        return tuple(e.node for e in self.membership.entries() if e.state == "joining")

    def incoming(self) -> Topology | None:
        """The topology once every joining member is active (what the joining members will
        hold, and so already receive), or None when nobody is joining."""
        if not self.joining():
            return None
        entries = (
            replace(e, state="active") if e.state == "joining" else e
            for e in self.membership.entries()
        )
        return topology(Membership(entries), self.base)

    def why_refused(self, entry: MemberEntry) -> str | None:
        """Why a join of ``entry`` must be refused here (None: accept it)."""
        return check_join(self.membership, entry, self.base.regions)

    # -- changing --------------------------------------------------------------------------

    def merge(self, incoming: Membership, source: str = "") -> bool:
        """Merges a list (a peer's, or entries made here); True when the list changed.
        Entries of regions this node does not know are refused and logged."""
        known = set(self.base.regions)
        accepted = []
        for entry in incoming.entries():
            if entry.region not in known:
                self.refused += 1
                log.warning(
                    "< member %s from %s refused: unknown region %r",
                    entry.node,
                    source or "?",
                    entry.region,
                )
                continue
            accepted.append(entry)
        merged = self.membership.merge(Membership(accepted))
        if merged == self.membership:
            return False
        before = self.membership
        self._observe(merged)
        self._save(merged)
        self.membership = merged
        self.topology = topology(merged, self.base)
        for entry in merged.entries():
            old = before.get(entry.node)
            if old is None or (old.state, old.incarnation) != (entry.state, entry.incarnation):
                self.transitions[entry.state] += 1
                log.info(
                    "member %s (%s, %s) is %s (incarnation %d)",
                    entry.node,
                    entry.region,
                    entry.address,
                    entry.state,
                    entry.incarnation,
                )
        for listener in self.on_change:
            try:
                listener(merged)
            except Exception:
                log.exception("a membership listener failed")
        return True

    def apply(self, entry: MemberEntry) -> bool:
        """Merges one entry made here; True when the list changed."""
        return self.merge(Membership([entry]), source=self.node_id)

    def _observe(self, membership: Membership) -> None:
        for entry in membership.entries():
            self.clock.observe(entry.stamp)

    # -- the file --------------------------------------------------------------------------

    def _load(self) -> Membership:
        if self.path is None or not self.path.exists():
            return Membership()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Membership.from_json(data)
        except (ValueError, MembershipError) as exc:
            raise MembershipError(f"{self.path} is damaged: {exc}") from None

    def _save(self, membership: Membership) -> None:
        if self.path is None:
            return
        temporary = self.path.with_suffix(".tmp")
        data = json.dumps(membership.to_json(), separators=(",", ":"), sort_keys=True)
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
