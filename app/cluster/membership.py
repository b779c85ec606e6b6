"""Membership: the member list, replicated data that every node holds and merges without
coordination (PRODUCT.md, "Membership"; issue 11).

A :class:`MemberEntry` says what one node is: its id, region, address (``host:port``), state
(``joining | active | leaving | removed``), incarnation and weight, and the :class:`Stamp` of
its last change. A :class:`Membership` holds one entry per node id; the pure operations
:func:`join`, :func:`activate`, :func:`leave`, :func:`remove` and :func:`change` make the entries
a node then applies and gossips. Liveness is not here: a failure detector changes routing, never
this list; only an explicit ``leave``/``remove`` does.

Merge rule. Per node id, the entry that is greater in this order wins::

    (incarnation, state, stamp, region, address, weight)

1. The higher **incarnation** wins: a new incarnation of a node replaces every entry of the old
   one, whatever its state.
2. Within one incarnation, the **state** only moves forward, ``joining < active < leaving <
   removed``: the later state wins. ``removed`` is the last, so it is absorbing: once an
   incarnation is removed, no entry of that incarnation (an old ``active`` still travelling in
   gossip, a node restarted with its old data) brings it back. A removed member never comes back
   under the same incarnation; a node id rejoins only with a higher incarnation.
3. Within one incarnation and state, the later **stamp** wins (an address or weight change).
4. Equal stamps (two entries forged or made with the same stamp) are ordered by region, address
   and weight, so every node still picks the same entry.

The order is total on the entries of one node id, so "keep the greater" is a join-semilattice:
commutative, associative and idempotent. A :class:`Membership` is the product of those, one per
node id, so any order, duplication or grouping of the same entries merges to the same list. The
``removed`` entry of a node is its **tombstone**: it is kept (never dropped from the list), which
is what stops an older entry of that incarnation from resurrecting it. A change made
concurrently with a later state loses to that state (an address change of a member being
removed is lost; so is a weight change racing a ``leave``): re-apply it after the state change.

Two nodes compare :meth:`Membership.digest` (a short hash of the sorted entries) to tell cheaply
whether they hold the same list. Everything here is pure: no I/O, no clock but the stamps the
caller passes (from a :class:`placement.StampClock`), no randomness.

Errors::

    PlacementError (ValueError)     app.cluster.placement: what the cluster modules refuse
     +-- MembershipError            a member entry or list this module refuses, peer input included
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar, Final

from .placement import Member, MemberState, PlacementError, Stamp, Topology

# fmt: off
__all__ = [
    "MembershipError",  # errors
    "MemberEntry", "Membership",  # values
    "join", "activate", "leave", "remove", "change", "next_incarnation",  # operations
    "check_join", "topology",  # checks and placement
    "STATES", "MAX_MEMBERS", "MAX_INCARNATION", "MAX_ADDRESS",  # limits
]
# fmt: on

#: The states of a member, in the order an incarnation moves through them.
STATES: Final[tuple[MemberState, ...]] = ("joining", "active", "leaving", "removed")
#: Entries in one member list, tombstones included: peer input is bounded before it is used,
#: and a merge that would pass it is refused (refuse joins well before: :func:`check_join`).
MAX_MEMBERS: Final = 4096
#: The largest incarnation: integers above 2**53 - 1 do not survive JSON in JavaScript.
MAX_INCARNATION: Final = 2**53 - 1
#: The longest address: a 253-character host name, ``:`` and a 5-digit port.
MAX_ADDRESS: Final = 259

#: A state's place in the order (the merge rule's second key).
_RANK: Final[Mapping[str, int]] = MappingProxyType({state: i for i, state in enumerate(STATES)})
#: ``host:port``: a lower-case host name or IPv4 address, or a bracketed IPv6 address, and a
#: port from 1 to 65535 without leading zeros. Lower case only, so that one address has one
#: spelling and a duplicate address is found by comparing strings.
_ADDRESS: Final = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]{2,45}\]):(?P<port>[1-9][0-9]{0,4})"
)
_ENTRY_KEYS: Final = ("node", "region", "address", "state", "incarnation", "stamp", "weight")
_LIST_KEYS: Final = ("members",)
_LIVE: Final = frozenset(("joining", "active", "leaving"))


class MembershipError(PlacementError):
    """A member entry or member list this module refuses; the message says which and why."""

    code: ClassVar[str] = "invalid_membership"


def _show(value: object) -> str:
    """``repr`` cut short: peer input may be huge."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(ok: bool, rule: str, value: object) -> None:
    """Raise ``MembershipError("<rule>, not <value>")`` unless ``ok``."""
    if not ok:
        raise MembershipError(f"{rule}, not {_show(value)}")


def _valid_address(value: object) -> bool:
    if not (isinstance(value, str) and len(value) <= MAX_ADDRESS):
        return False
    match = _ADDRESS.fullmatch(value)
    return match is not None and int(match["port"]) <= 65535


# ---------------------------------------------------------------------------------------------
# Entries


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One node in the member list, as of its last change; two entries of one node merge with
    :meth:`merge`, lists of them through :class:`Membership`.

    Raises :class:`MembershipError` on a bad node id or region (the rules of
    :class:`placement.Member`), an address that is not ``host:port`` as above, an unknown state,
    an incarnation that is not an integer from 1 to :data:`MAX_INCARNATION`, a weight that is not
    positive and finite, or a stamp that is not a :class:`Stamp`. The weight is stored as a float.
    """

    #: The node's id: hashed with document ids by rendezvous hashing, unique in the list.
    node: str
    #: The region the node runs in.
    region: str
    #: Where peers reach the node, ``host:port``.
    address: str
    #: Where this incarnation is: joining, active, leaving or removed.
    state: MemberState
    #: Which life of the node id this is: a node that rejoins after removal has a higher one.
    incarnation: int
    #: The last change of this entry (a join, a state change, an address or weight change).
    stamp: Stamp
    #: The node's relative share of its region's documents (positive, finite).
    weight: float = 1.0
    #: The merge order (incarnation, state rank, stamp, region, address, weight).
    _order: tuple[int, int, Stamp, str, str, float] = field(init=False, repr=False, compare=False)
    #: The node as placement sees it (built once: :func:`topology` reads it).
    _member: Member = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _need(isinstance(self.stamp, Stamp), "a member's stamp must be a Stamp", self.stamp)
        ok = _is_int(self.incarnation) and 1 <= self.incarnation <= MAX_INCARNATION
        rule = f"member {_show(self.node)}'s incarnation must be an integer from 1 to"
        _need(ok, f"{rule} {MAX_INCARNATION}", self.incarnation)
        _need(
            _valid_address(self.address),
            f"member {_show(self.node)}'s address must be host:port (lower case, port 1-65535)",
            self.address,
        )
        weight = self.weight
        ok = isinstance(weight, int | float) and not isinstance(weight, bool)
        _need(ok, f"member {_show(self.node)}'s weight must be a number", weight)
        try:
            member = Member(self.node, self.region, float(weight), self.state)
        except OverflowError:
            raise MembershipError(f"member {_show(self.node)}'s weight must be finite") from None
        except PlacementError as exc:
            raise MembershipError(str(exc)) from None
        object.__setattr__(self, "weight", member.weight)
        object.__setattr__(self, "_member", member)
        order = (self.incarnation, _RANK[self.state], self.stamp, self.region, self.address)
        object.__setattr__(self, "_order", (*order, member.weight))

    @property
    def live(self) -> bool:
        """Whether the member is in the cluster (joining, active or leaving), not removed."""
        return self.state in _LIVE

    @property
    def member(self) -> Member:
        """The node as :mod:`placement` sees it (its state included)."""
        return self._member

    def merge(self, other: MemberEntry) -> MemberEntry:
        """The greater of two entries of one node id by the merge rule (see the module).
        Raises :class:`MembershipError` when the node ids differ."""
        if other.node != self.node:
            raise MembershipError(f"cannot merge the entries of {self.node!r} and {other.node!r}")
        return other if other._order > self._order else self

    def to_json(self) -> dict[str, Any]:
        """A dict of JSON types, every field present."""
        return {
            "node": self.node,
            "region": self.region,
            "address": self.address,
            "state": self.state,
            "incarnation": self.incarnation,
            "weight": self.weight,
            "stamp": self.stamp.to_json(),
        }

    @classmethod
    def from_json(cls, data: object) -> MemberEntry:
        """An entry from :meth:`to_json`'s output, received from a peer: exactly those fields,
        of those JSON types; raises :class:`MembershipError` naming the field otherwise."""
        if not isinstance(data, dict):
            raise MembershipError(f"a member entry must be a JSON object, not {_show(data)}")
        for key in data:
            _need(key in _ENTRY_KEYS, f"a member entry's fields are {', '.join(_ENTRY_KEYS)}", key)
        for key in _ENTRY_KEYS:
            _need(key in data, f"a member entry needs {key!r}", sorted(data))
        node = data["node"]
        for key in ("node", "region", "address", "state"):
            _need(
                isinstance(data[key], str),
                f"member {_show(node)}'s {key} must be a string",
                data[key],
            )
        _need(
            data["state"] in _RANK,
            f"member {_show(node)}'s state must be one of {', '.join(STATES)}",
            data["state"],
        )
        try:
            return cls(
                node=node,
                region=data["region"],
                address=data["address"],
                state=data["state"],
                incarnation=data["incarnation"],
                weight=data["weight"],
                stamp=Stamp.from_json(data["stamp"], f"member {_show(node)}'s stamp"),
            )
        except MembershipError:
            raise
        except PlacementError as exc:
            raise MembershipError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# The member list


class Membership:
    """The member list: one :class:`MemberEntry` per node id, merged by the rule of the module.

    An immutable value: :meth:`merge` and :meth:`apply` return a new list (or ``self`` or the
    other list when that already is the result, so equal lists are often the same object).
    Raises :class:`MembershipError` when the list would hold more than :data:`MAX_MEMBERS`
    entries.
    """

    __slots__ = ("_digest", "_entries", "_sorted")

    #: Entry by node id; never changed after construction.
    _entries: Mapping[str, MemberEntry]
    #: The entries sorted by node id, made on first use.
    _sorted: tuple[MemberEntry, ...] | None
    #: The digest, made on first use.
    _digest: str | None

    def __init__(self, entries: Iterable[MemberEntry] = ()) -> None:
        """The list of ``entries``, several entries of one node id merged."""
        merged: dict[str, MemberEntry] = {}
        for entry in entries:
            _need(isinstance(entry, MemberEntry), "a member list holds MemberEntry", entry)
            known = merged.get(entry.node)
            merged[entry.node] = entry if known is None else known.merge(entry)
            if len(merged) > MAX_MEMBERS:
                raise MembershipError(f"a member list holds at most {MAX_MEMBERS} entries")
        self._entries = merged
        self._sorted = None
        self._digest = None

    @classmethod
    def _of(cls, entries: dict[str, MemberEntry]) -> Membership:
        """A list of entries already merged (no checks)."""
        if len(entries) > MAX_MEMBERS:
            raise MembershipError(f"a member list holds at most {MAX_MEMBERS} entries")
        made = cls.__new__(cls)
        made._entries = entries
        made._sorted = None
        made._digest = None
        return made

    # -- reading ------------------------------------------------------------------------------

    def entries(self) -> tuple[MemberEntry, ...]:
        """Every entry, removed ones (tombstones) included, sorted by node id."""
        if self._sorted is None:
            self._sorted = tuple(self._entries[node] for node in sorted(self._entries))
        return self._sorted

    def active(self) -> tuple[MemberEntry, ...]:
        """The active entries (the members that hold documents), sorted by node id."""
        return tuple(entry for entry in self.entries() if entry.state == "active")

    def live(self) -> tuple[MemberEntry, ...]:
        """The entries that are not removed (joining, active or leaving), sorted by node id: the
        nodes to gossip with."""
        return tuple(entry for entry in self.entries() if entry.live)

    def get(self, node: str) -> MemberEntry | None:
        """The entry of ``node``, None when the list has none."""
        return self._entries.get(node)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node: object) -> bool:
        return node in self._entries

    def __iter__(self) -> Iterator[MemberEntry]:
        return iter(self.entries())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Membership):
            return NotImplemented
        return other._entries is self._entries or other._entries == self._entries

    def __hash__(self) -> int:
        return hash(self.digest())

    def __repr__(self) -> str:
        return f"Membership({len(self)} entries, digest {self.digest()})"

    def digest(self) -> str:
        """32 hex digits (blake2b-128) of the sorted entries' canonical JSON: equal lists have
        equal digests on every node, so two nodes compare digests to tell whether they agree."""
        if self._digest is None:
            text = json.dumps(
                [entry.to_json() for entry in self.entries()],
                separators=(",", ":"),
                sort_keys=True,
                ensure_ascii=True,
                allow_nan=False,
            )
            self._digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        return self._digest

    def includes(self, other: Membership) -> bool:
        """Whether this list has seen everything ``other`` has (``other`` merged into it changes
        nothing): the order of the semilattice, what a node's list only ever grows in."""
        mine = self._entries
        for node, theirs in other._entries.items():
            entry = mine.get(node)
            if entry is None or (entry is not theirs and theirs._order > entry._order):
                return False
        return True

    # -- merging ------------------------------------------------------------------------------

    def merge(self, other: Membership) -> Membership:
        """The join of two lists: per node id the greater entry by the merge rule. Commutative,
        associative and idempotent. Returns ``self`` when ``other`` brings nothing new and
        ``other`` when ``self`` does. Raises :class:`MembershipError` when the result would hold
        more than :data:`MAX_MEMBERS` entries."""
        mine, theirs = self._entries, other._entries
        if theirs is mine or not theirs:
            return self
        if not mine:
            return other
        merged: dict[str, MemberEntry] | None = None
        # Whether one of our entries beats theirs, and how many of our node ids they have: the
        # result is ``other`` itself when none wins and they have them all.
        ours_win = False
        shared = 0
        for node, entry in theirs.items():
            known = mine.get(node)
            if known is None:
                pass
            elif known is entry or known._order == entry._order:
                shared += 1
                continue
            else:
                shared += 1
                if known._order > entry._order:
                    ours_win = True
                    continue
            if merged is None:
                merged = dict(mine)
            merged[node] = entry
        if merged is None:
            return self
        if not ours_win and shared == len(mine):
            return other
        return Membership._of(merged)

    def apply(self, entry: MemberEntry) -> Membership:
        """The list with ``entry`` merged in (``self`` when it loses to the entry held)."""
        known = self._entries.get(entry.node)
        if known is not None and known.merge(entry) is known:
            return self
        merged = dict(self._entries)
        merged[entry.node] = entry
        return Membership._of(merged)

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """``{"members": [entry, ...]}``, entries sorted by node id, tombstones included."""
        return {"members": [entry.to_json() for entry in self.entries()]}

    @classmethod
    def from_json(cls, data: object) -> Membership:
        """A list from :meth:`to_json`'s output, received from a peer. Entries of one node id
        are merged. Raises :class:`MembershipError` for anything but an object with exactly
        ``"members"``, a list of at most :data:`MAX_MEMBERS` valid entries."""
        if not isinstance(data, dict):
            raise MembershipError(f"a member list must be a JSON object, not {_show(data)}")
        for key in data:
            _need(key in _LIST_KEYS, "a member list's only field is 'members'", key)
        members = data.get("members")
        if not (isinstance(members, list) and len(members) <= MAX_MEMBERS):
            rule = f"'members' must be a list of at most {MAX_MEMBERS} entries"
            raise MembershipError(f"{rule}, not {_show(members)}")
        return cls(MemberEntry.from_json(item) for item in members)


# ---------------------------------------------------------------------------------------------
# Operations: the entries a node makes, applies and gossips


def join(
    node: str, region: str, address: str, incarnation: int, stamp: Stamp, weight: float = 1.0
) -> MemberEntry:
    """The entry of ``node`` joining at ``address`` in ``region`` as ``incarnation`` (1 for a
    node id never seen, :func:`next_incarnation` after a removal). Check it against the list
    with :func:`check_join` before applying it. Raises :class:`MembershipError` on bad values."""
    return MemberEntry(node, region, address, "joining", incarnation, stamp, weight)


def _advance(entry: MemberEntry, state: MemberState, stamp: Stamp) -> MemberEntry:
    if entry.state == state:
        return entry
    if _RANK[state] < _RANK[entry.state]:
        raise MembershipError(
            f"member {entry.node} is {entry.state} under incarnation {entry.incarnation}: it "
            f"cannot become {state} again; it rejoins with a new incarnation"
        )
    _later(entry, stamp)
    return replace(entry, state=state, stamp=stamp)


def _later(entry: MemberEntry, stamp: Stamp) -> None:
    _need(isinstance(stamp, Stamp), "a change's stamp must be a Stamp", stamp)
    if stamp <= entry.stamp:
        raise MembershipError(
            f"a change of member {entry.node} stamped {stamp} does not follow its last change "
            f"{entry.stamp} (observe the entry's stamp with the StampClock first)"
        )


def activate(entry: MemberEntry, stamp: Stamp) -> MemberEntry:
    """``entry`` made active (it took its share of documents and now holds them). Returns
    ``entry`` itself when already active (safe to repeat); raises :class:`MembershipError` when it
    is leaving or removed, or ``stamp`` is not later than ``entry.stamp``."""
    return _advance(entry, "active", stamp)


def leave(entry: MemberEntry, stamp: Stamp) -> MemberEntry:
    """``entry`` leaving (it hands its documents to their next holders). Returns ``entry`` itself
    when already leaving; raises :class:`MembershipError` when removed or on a stale stamp."""
    return _advance(entry, "leaving", stamp)


def remove(entry: MemberEntry, stamp: Stamp) -> MemberEntry:
    """``entry`` removed: its tombstone, for good under this incarnation. Returns ``entry``
    itself when already removed (safe to repeat); raises :class:`MembershipError` on a stale
    stamp."""
    return _advance(entry, "removed", stamp)


def change(
    entry: MemberEntry, stamp: Stamp, *, address: str | None = None, weight: float | None = None
) -> MemberEntry:
    """``entry`` with a new address and/or weight, same state and incarnation. Raises
    :class:`MembershipError` when it is removed, ``stamp`` is not later than ``entry.stamp``, or
    a value is bad."""
    if not entry.live:
        raise MembershipError(f"member {entry.node} is removed: it cannot change any more")
    _later(entry, stamp)
    return replace(
        entry,
        address=entry.address if address is None else address,
        weight=entry.weight if weight is None else weight,
        stamp=stamp,
    )


def next_incarnation(membership: Membership, node: str) -> int:
    """The incarnation ``node`` joins with: 1 for a node id the list does not know, else one more
    than the one it knows (a restart that keeps the id but lost or must not reuse its data)."""
    known = membership.get(node)
    return 1 if known is None else known.incarnation + 1


def check_join(
    membership: Membership, entry: MemberEntry, known_regions: Collection[str]
) -> str | None:
    """Why the seed holding ``membership`` must refuse the join ``entry`` (None to accept it):
    the entry is not ``joining``; its region is not one of ``known_regions`` (those of
    regions.toml); its node id is known under a higher incarnation, or removed under this one;
    it is already a member under this incarnation with another region or address; another live
    member holds its address; or the list is full. Accepting the same join twice is fine."""
    node = entry.node
    if entry.state != "joining":
        return f"a join carries state 'joining', not {entry.state!r}"
    if entry.region not in known_regions:
        known = ", ".join(sorted(known_regions))
        return f"unknown region {entry.region!r} (known: {known})"
    held = membership.get(node)
    if held is not None:
        if held.incarnation > entry.incarnation:
            return (
                f"node {node} is known under incarnation {held.incarnation}: it rejoins with "
                f"incarnation {held.incarnation + 1}, not {entry.incarnation}"
            )
        if held.incarnation == entry.incarnation:
            if held.state == "removed":
                return (
                    f"node {node} was removed under incarnation {held.incarnation}: a removed "
                    f"member never comes back under the same incarnation; it rejoins with "
                    f"incarnation {held.incarnation + 1}"
                )
            if (held.region, held.address) != (entry.region, entry.address):
                return (
                    f"node {node} is already a member under incarnation {held.incarnation}, in "
                    f"{held.region} at {held.address}"
                )
    for other in membership.entries():
        if other.node != node and other.live and other.address == entry.address:
            return f"address {entry.address} is held by member {other.node} ({other.state})"
    if held is None and len(membership) >= MAX_MEMBERS:
        return f"the member list is full ({MAX_MEMBERS} entries, tombstones included)"
    return None


# ---------------------------------------------------------------------------------------------
# Placement


def topology(membership: Membership, base: Topology) -> Topology:
    """``base`` (regions, latencies, replicas, nodes per region) with the members of
    ``membership``: every entry that is not removed, with its state and weight, so only the
    active ones hold documents and :meth:`Topology.region_of` still finds a joining or leaving
    node. Members of regions ``base`` does not have are left out by the topology."""
    return Topology(
        regions=base.regions,
        latency_ms=base.latency_ms,
        replicas=base.replicas,
        nodes_per_region=base.nodes_per_region,
        members=tuple(entry.member for entry in membership.entries() if entry.live),
    )
