"""Placement: which regions, and which nodes in them, hold each document.

The model (PRODUCT.md, "Placement"):

* Every document has one :class:`PlacementRecord`, replicated data that every node holds. It
  names the document's **home** region (where it was first written) and its **policy**:
  ``default`` (home plus the nearest other regions, up to the topology's ``replicas``),
  ``count`` (home plus the nearest others, up to a number the user chose) or ``regions`` (an
  explicit list, optionally **pinned**: the document's content is never stored elsewhere).
* Records merge without coordination: :func:`merge` is a join-semilattice (commutative,
  associative, idempotent). Two stamps decide. The smallest ``born`` gives ``home`` (first
  writer wins: an id created in two regions during a partition ends up with the earliest
  creation everywhere); the largest ``changed`` gives the policy (last writer wins). Stamps are
  hybrid logical clocks (:class:`StampClock`) with the node id as tie-break, so two changes never
  carry the same stamp. A home can move toward the document's readers (:func:`with_home`, the
  ``moved`` field, last writer wins); regions are counted from the current home.
* A :class:`Topology` (:mod:`app.cluster.topology`, re-exported here) is what placement needs
  of the cluster: regions, latencies between them, the default number of regions, nodes per
  region and the member list. :func:`regions_of` turns a record into regions; inside each
  region, weighted rendezvous hashing (:func:`rendezvous`) over the region's *active* members
  picks ``nodes_per_region`` holders (:func:`holders`), so documents spread evenly and a node
  that joins takes only its share.

Everything here is pure (no I/O, no clock but the injected one, no randomness, no ``hash()``):
the same inputs give the same answer in every process, which the node and the simulator rely on.

Errors::

    PlacementError (ValueError)   anything placement refuses, records from peers included
     +-- MalformedPlacement       a placement request of the wrong shape or JSON types
     +-- InvalidPlacement         a well-formed placement request this topology cannot satisfy
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Final, Literal, TypeAlias

from .topology import (
    _NODE_ID,
    _REGION_NAME,
    MAX_REGIONS,
    Member,
    MemberState,
    PlacementError,
    Topology,
    _is_int,
    _name,
    _need,
    _show,
    hrw_order,
    nearest_holder,
    nearest_regions,
    rendezvous,
)

# fmt: off
__all__ = [
    "PlacementError", "MalformedPlacement", "InvalidPlacement",  # errors
    "Stamp", "StampClock",  # stamps
    "PolicyName", "Policy", "PlacementRecord", "merge", "with_policy", "allows_content",  # records
    "with_follower", "followers", "with_home", "move_target",  # follower copies, re-homing
    "resolve_request",  # placement requests
    "MemberState", "Member", "Topology",  # topology
    "nearest_regions", "regions_of", "rendezvous", "hrw_order", "holders", "nearest_holder",
    "stand_ins",  # writes while a holder is down
    "MAX_REGIONS", "MAX_MILLIS",  # limits
]
# fmt: on

PolicyName: TypeAlias = Literal["default", "regions", "count"]

#: The largest stamp: integers above 2**53 - 1 do not survive JSON in JavaScript.
MAX_MILLIS: Final = 2**53 - 1
#: The largest incarnation a record names (JSON numbers are exact up to 2**53).
MAX_INCARNATION: Final = 2**53 - 1

#: Document ids, as crdt.records.DOCUMENT_ID (repeated so this module imports nothing).
_DOCUMENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: What each policy's other fields must be (the record invariants).
_SHAPES: Final = {
    "default": "no regions, count 0 and no pin",
    "count": f"no regions, a count from 1 to {MAX_REGIONS} and no pin",
    "regions": "1 or more sorted, unique regions and count 0",
}
_RECORD_KEYS: Final = (
    "doc_id", "home", "born", "policy", "regions", "count", "pinned", "changed", "followers",
    "moved", "deleted",
)  # fmt: skip
_REQUEST_KEYS: Final = ("regions", "replicas", "pinned")


class MalformedPlacement(PlacementError):
    """A placement request that is not ``{"regions": [...]}`` or ``{"replicas": N}`` with an
    optional boolean ``"pinned"``: wrong JSON types, unknown, missing or conflicting fields."""

    code: ClassVar[str] = "malformed_placement"


class InvalidPlacement(PlacementError):
    """A well-formed placement request this topology cannot satisfy: no regions, duplicate or
    unknown regions, more regions than the cluster has, replicas out of range."""

    code: ClassVar[str] = "invalid_placement"


# ---------------------------------------------------------------------------------------------
# Stamps


@dataclass(frozen=True, order=True, slots=True)
class Stamp:
    """A hybrid logical timestamp: milliseconds, then the node that made it as tie-break.

    Stamps of one :class:`StampClock` strictly increase and carry its node id, so stamps made by
    different clocks never compare equal. Raises :class:`PlacementError` when ``millis`` is not an
    integer from 0 to :data:`MAX_MILLIS` or ``node`` is neither ``""`` nor a node id.
    """

    #: The stamp before every other: a record whose policy was never changed has it.
    ZERO: ClassVar[Stamp]

    #: Milliseconds since the epoch, pushed past every stamp its node has seen.
    millis: int
    #: The node that made the stamp: orders two stamps of the same millisecond.
    node: str

    def __post_init__(self) -> None:
        ok = _is_int(self.millis) and 0 <= self.millis <= MAX_MILLIS
        _need(ok, f"a stamp's millis must be an integer from 0 to {MAX_MILLIS}", self.millis)
        _need(self.node == "" or _name(self.node, _NODE_ID), "a stamp's node: a node id", self.node)

    def to_json(self) -> list[Any]:
        return [self.millis, self.node]

    @classmethod
    def from_json(cls, data: object, where: str = "stamp") -> Stamp:
        """``[millis, node]`` back to a stamp; raises :class:`PlacementError` otherwise."""
        if not (isinstance(data, list) and len(data) == 2 and _is_int(data[0])):
            raise PlacementError(f"{where} must be a list [millis, node], not {_show(data)}")
        try:
            return cls(data[0], data[1])
        except PlacementError as exc:
            raise PlacementError(f"{where}: {exc}") from None


Stamp.ZERO = Stamp(0, "")


class StampClock:
    """One node's source of :class:`Stamp`: strictly increasing, ahead of every stamp observed.

    The caller must :meth:`observe` the stamps of every record it receives from another node
    before it stamps a change to that record, so the change wins over what it replaces.
    """

    def __init__(self, node: str, wall: Callable[[], float] = time.time) -> None:
        """``wall`` returns seconds since the epoch (``time.time``); raises
        :class:`PlacementError` when ``node`` is not a node id."""
        _need(_name(node, _NODE_ID), "a clock's node must be a node id", node)
        #: The node whose stamps these are (the tie-break of equal milliseconds).
        self.node = node
        #: The wall clock, injectable so tests can move it back and forth.
        self._wall = wall
        #: The highest millis made here or observed: the next stamp is later.
        self._millis = 0

    def now(self) -> Stamp:
        """A stamp later than every stamp made or observed so far, even if the wall clock went
        back (then it runs one millisecond ahead of the last stamp)."""
        self._millis = max(int(self._wall() * 1000), self._millis + 1)
        return Stamp(self._millis, self.node)

    def observe(self, stamp: Stamp) -> None:
        """Move past ``stamp``, seen from another node: every later :meth:`now` is greater."""
        self._millis = max(self._millis, stamp.millis)


# ---------------------------------------------------------------------------------------------
# Placement records


@dataclass(frozen=True, order=True, slots=True)
class Policy:
    """The policy fields of a record, as :func:`resolve_request` returns them (ordered: the
    tie-break of two changes with equal stamps)."""

    policy: PolicyName
    regions: tuple[str, ...]
    count: int
    pinned: bool


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    """The replicated placement record of one document; merge copies with :func:`merge`.

    Invariants, checked on construction (:class:`PlacementError` otherwise): policy ``default``
    has no regions, count 0 and is not pinned; ``count`` has 1..:data:`MAX_REGIONS` as count, no
    regions and is not pinned; ``regions`` has 1..:data:`MAX_REGIONS` sorted, unique region names
    and count 0. Names of regions absent from the topology are allowed (regions come and go).
    """

    #: The document this record places.
    doc_id: str
    #: The region of the document's first write; decided by the smallest ``born``.
    home: str
    #: The document's creation (first write): the earliest one wins a concurrent create.
    born: Stamp
    #: How the regions are chosen.
    policy: PolicyName = "default"
    #: The explicit regions, sorted, for policy ``regions``; empty otherwise.
    regions: tuple[str, ...] = ()
    #: How many regions hold the document, for policy ``count``; 0 otherwise.
    count: int = 0
    #: Content never stored outside ``regions`` (data residency); only with policy ``regions``.
    pinned: bool = False
    #: The last explicit policy change, Stamp.ZERO until one; the latest change wins.
    changed: Stamp = Stamp.ZERO
    #: Regions whose readers gained a follower copy: (region, stamp, on), sorted by region;
    #: per region the latest stamp wins (a follower gained, then dropped when idle).
    followers: tuple[tuple[str, Stamp, bool], ...] = ()
    #: The home moved toward the document's readers: (region, stamp), the latest stamp wins;
    #: None while the home is where the document was first written.
    moved: tuple[str, Stamp] | None = None
    #: The highest incarnation of the document known to be deleted (0: none); the largest
    #: wins. A node without a copy that must take a write blind (a hint, no copy reachable)
    #: writes into the incarnation after it, not into a first one its holders left behind.
    deleted: int = 0

    def __post_init__(self) -> None:
        _need(_name(self.doc_id, _DOCUMENT_ID), "doc_id must be a document id", self.doc_id)
        _need(_name(self.home, _REGION_NAME), "home must be a region name", self.home)
        _need(isinstance(self.born, Stamp), "born must be a Stamp", self.born)
        _need(isinstance(self.changed, Stamp), "changed must be a Stamp", self.changed)
        known = isinstance(self.policy, str) and self.policy in _SHAPES
        _need(known, f"policy must be one of {', '.join(_SHAPES)}", self.policy)
        _need(isinstance(self.pinned, bool), "pinned must be true or false", self.pinned)
        _need(_is_int(self.count), "count must be an integer", self.count)
        names = isinstance(self.regions, tuple) and len(self.regions) <= MAX_REGIONS
        names = names and all(_name(region, _REGION_NAME) for region in self.regions)
        _need(names, f"regions must be at most {MAX_REGIONS} region names", self.regions)
        regions, count, pinned = self.regions, self.count, self.pinned
        fits = {
            "default": not regions and count == 0 and not pinned,
            "count": not regions and 1 <= count <= MAX_REGIONS and not pinned,
            "regions": bool(regions) and list(regions) == sorted(set(regions)) and count == 0,
        }[self.policy]
        what = f"regions={list(regions)} count={count} pinned={pinned}"
        _need(fits, f"policy {self.policy!r} takes {_SHAPES[self.policy]}", what)
        follows = isinstance(self.followers, tuple) and len(self.followers) <= MAX_REGIONS
        follows = follows and all(
            isinstance(entry, tuple)
            and len(entry) == 3
            and _name(entry[0], _REGION_NAME)
            and isinstance(entry[1], Stamp)
            and isinstance(entry[2], bool)
            for entry in self.followers
        )
        follows = follows and [e[0] for e in self.followers] == sorted(
            {e[0] for e in self.followers}
        )
        _need(
            follows,
            "followers must be sorted, distinct (region, stamp, on) entries",
            self.followers,
        )
        moved = self.moved is None or (
            isinstance(self.moved, tuple)
            and len(self.moved) == 2
            and _name(self.moved[0], _REGION_NAME)
            and isinstance(self.moved[1], Stamp)
        )
        _need(moved, "moved must be a (region, stamp) pair", self.moved)
        ok = _is_int(self.deleted) and 0 <= self.deleted <= MAX_INCARNATION
        _need(ok, f"deleted must be an incarnation, 0 to {MAX_INCARNATION}", self.deleted)

    @classmethod
    def new(cls, doc_id: str, home: str, born: Stamp) -> PlacementRecord:
        """The record of a document first written in ``home`` at ``born``: default policy."""
        return cls(doc_id, home, born)

    @property
    def current_home(self) -> str:
        """The home region now: where the document moved to, else where it was first written."""
        return self.moved[0] if self.moved is not None else self.home

    @property
    def policy_fields(self) -> Policy:
        return Policy(self.policy, self.regions, self.count, self.pinned)

    def to_json(self) -> dict[str, Any]:
        """A dict of JSON types; fields at their default value are left out."""
        data: dict[str, Any] = {
            "doc_id": self.doc_id,
            "home": self.home,
            "born": self.born.to_json(),
            "policy": self.policy,
        }
        if self.regions:
            data["regions"] = list(self.regions)
        if self.count:
            data["count"] = self.count
        if self.pinned:
            data["pinned"] = True
        if self.changed != Stamp.ZERO:
            data["changed"] = self.changed.to_json()
        if self.followers:
            data["followers"] = [[r, stamp.to_json(), on] for r, stamp, on in self.followers]
        if self.moved is not None:
            data["moved"] = [self.moved[0], self.moved[1].to_json()]
        if self.deleted:
            data["deleted"] = self.deleted
        return data

    @classmethod
    def from_json(cls, data: object) -> PlacementRecord:
        """A record from :meth:`to_json`'s output, received from a peer: every field is checked
        and anything else raises :class:`PlacementError` naming the field."""
        if not isinstance(data, dict):
            raise PlacementError(f"a placement record must be a JSON object, not {_show(data)}")
        known = f"a placement record's fields are {', '.join(_RECORD_KEYS)}"
        for key in data:
            _need(key in _RECORD_KEYS, known, key)
        for key in ("doc_id", "home", "born", "policy"):
            _need(key in data, f"a placement record needs {key!r}", sorted(data))
        regions = data.get("regions", [])
        ok = isinstance(regions, list) and len(regions) <= MAX_REGIONS
        _need(ok, f"regions must be a list of at most {MAX_REGIONS} region names", regions)
        followers = data.get("followers", [])
        ok = isinstance(followers, list) and len(followers) <= MAX_REGIONS
        ok = ok and all(isinstance(f, list) and len(f) == 3 for f in followers)
        _need(ok, "followers must be a list of [region, stamp, on]", followers)
        moved = data.get("moved")
        ok = moved is None or (isinstance(moved, list) and len(moved) == 2)
        _need(ok, "moved must be a list [region, stamp]", moved)
        try:
            return cls(
                doc_id=data["doc_id"],
                home=data["home"],
                born=Stamp.from_json(data["born"], "born"),
                policy=data["policy"],
                regions=tuple(regions),
                count=data.get("count", 0),
                pinned=data.get("pinned", False),
                changed=Stamp.from_json(data.get("changed", [0, ""]), "changed"),
                followers=tuple(
                    (region, Stamp.from_json(stamp, "a follower's stamp"), on)
                    for region, stamp, on in followers
                ),
                moved=None
                if moved is None
                else (moved[0], Stamp.from_json(moved[1], "the moved home's stamp")),
                deleted=data.get("deleted", 0),
            )
        except PlacementError as exc:
            raise PlacementError(f"placement record {_show(data.get('doc_id'))}: {exc}") from None


def merge(a: PlacementRecord, b: PlacementRecord) -> PlacementRecord:
    """The join of two copies of one document's record: ``home`` and ``born`` of the smaller
    ``(born, home)``, the policy of the larger ``(changed, policy fields)``, per region the
    follower entry of the larger ``(stamp, on)``, the ``moved`` home of the larger
    ``(stamp, region)``, the larger ``deleted``. Commutative, associative and idempotent. Raises
    :class:`PlacementError` when the doc ids differ."""
    if a.doc_id != b.doc_id:
        raise PlacementError(f"cannot merge the records of {a.doc_id!r} and {b.doc_id!r}")
    first = a if (a.born, a.home) <= (b.born, b.home) else b
    latest = a if (a.changed, a.policy_fields) >= (b.changed, b.policy_fields) else b
    followers = _merge_followers(a.followers, b.followers)
    moved = _later_move(a.moved, b.moved)
    deleted = max(a.deleted, b.deleted)
    if (
        first is latest
        and followers == first.followers
        and moved == first.moved
        and deleted == first.deleted
    ):
        return first
    return replace(
        latest, home=first.home, born=first.born, followers=followers, moved=moved, deleted=deleted
    )


def _later_move(
    a: tuple[str, Stamp] | None, b: tuple[str, Stamp] | None
) -> tuple[str, Stamp] | None:
    if a is None or b is None:
        return a if b is None else b
    return a if (a[1], a[0]) >= (b[1], b[0]) else b


def _merge_followers(
    a: tuple[tuple[str, Stamp, bool], ...], b: tuple[tuple[str, Stamp, bool], ...]
) -> tuple[tuple[str, Stamp, bool], ...]:
    """Per region, the entry with the larger (stamp, on): a last-writer-wins map."""
    if a == b:
        return a
    entries: dict[str, tuple[str, Stamp, bool]] = {}
    for entry in (*a, *b):
        known = entries.get(entry[0])
        if known is None or (entry[1], entry[2]) > (known[1], known[2]):
            entries[entry[0]] = entry
    return tuple(entries[region] for region in sorted(entries))


def with_deleted(record: PlacementRecord, incarnation: int) -> PlacementRecord:
    """``record`` knowing that ``incarnation`` of its document was deleted."""
    if incarnation <= record.deleted:
        return record
    return replace(record, deleted=incarnation)


def with_follower(record: PlacementRecord, region: str, on: bool, stamp: Stamp) -> PlacementRecord:
    """``record`` with ``region``'s follower copy gained (``on``) or dropped at ``stamp``."""
    return replace(record, followers=_merge_followers(record.followers, ((region, stamp, on),)))


def with_home(record: PlacementRecord, region: str, stamp: Stamp) -> PlacementRecord:
    """``record`` with its home moved to ``region`` at ``stamp`` (toward its readers); the
    region's follower entry is turned off at the same stamp (the region now holds the
    document). Raises :class:`PlacementError` when ``stamp`` does not follow the last move."""
    if record.moved is not None and stamp <= record.moved[1]:
        raise PlacementError(
            f"a home move stamped {stamp} does not follow the last move {record.moved[1]}"
        )
    return replace(
        record,
        moved=(region, stamp),
        followers=_merge_followers(record.followers, ((region, stamp, False),)),
    )


def move_target(record: PlacementRecord, topology: Topology) -> tuple[str, Stamp] | None:
    """Where the document's home would move if its home region went cold: the region of the
    follower copy in use the longest (the earliest stamp; ties by name) and that stamp. None
    for an explicit or pinned policy (the user chose its regions) or without a follower copy
    outside the regions that hold the document."""
    if record.pinned or record.policy == "regions":
        return None
    held = set(regions_of(record, topology))
    candidates = [
        (stamp, region)
        for region, stamp, on in record.followers
        if on and region not in held and region in topology.regions
    ]
    if not candidates:
        return None
    stamp, region = min(candidates)
    return region, stamp


def followers(record: PlacementRecord, topology: Topology) -> tuple[str, ...]:
    """The nodes holding a follower copy: in each region whose readers gained one (and that
    does not hold the document anyway), the first active member in rendezvous order. A pinned
    document has none."""
    if record.pinned:
        return ()
    held = set(regions_of(record, topology))
    nodes: list[str] = []
    for region, _, on in record.followers:
        if on and region not in held and region in topology.regions:
            order = rendezvous(record.doc_id, topology.active_members(region), 1)
            nodes.extend(member.node for member in order)
    return tuple(nodes)


def with_policy(record: PlacementRecord, policy: Policy, stamp: Stamp) -> PlacementRecord:
    """``record`` with a new policy changed at ``stamp``. The caller stamps with its
    :class:`StampClock` after observing ``record.changed``; raises :class:`PlacementError` when
    ``stamp`` is not later than ``record.changed`` (the change would lose to what it replaces)
    or the policy breaks a record invariant."""
    if stamp <= record.changed:
        raise PlacementError(
            f"a policy change stamped {stamp} does not follow the last change {record.changed}"
        )
    return replace(record, changed=stamp, **asdict(policy))


def allows_content(record: PlacementRecord, region: str) -> bool:
    """Whether the document's content may be stored in ``region``: False only when the record is
    pinned and ``region`` is not among its regions."""
    return not record.pinned or region in record.regions


# ---------------------------------------------------------------------------------------------
# Regions and holders of a document


def _anchor(home: str, topology: Topology) -> str:
    """Where the nearest regions are counted from: the home region, or, when the topology no
    longer has it (a removed region), its first region by name."""
    return home if home in topology.regions else topology.regions[0]


def regions_of(record: PlacementRecord, topology: Topology) -> tuple[str, ...]:
    """The regions that hold the document, nearest to its home first.

    ``default``: home and the nearest others, ``topology.replicas`` regions; ``count``: the
    same, ``record.count`` regions (both capped at the number of regions). ``regions``: those
    listed that the topology has, by latency from home then name; possibly none. When home is not
    a region of the topology, the topology's first region by name stands in for it.
    """
    anchor = _anchor(record.current_home, topology)
    if record.policy == "regions":
        listed = [region for region in record.regions if region in topology.regions]
        return tuple(sorted(listed, key=lambda r: (r != anchor, topology.latency(anchor, r), r)))
    wanted = topology.replicas if record.policy == "default" else record.count
    return tuple(nearest_regions(anchor, topology)[:wanted])


def holders(record: PlacementRecord, topology: Topology) -> tuple[str, ...]:
    """The nodes that hold the document: in each region of :func:`regions_of` (in its order),
    the first ``nodes_per_region`` active members in rendezvous order (fewer if the region has
    fewer)."""
    k = topology.nodes_per_region
    return tuple(
        member.node
        for region in regions_of(record, topology)
        for member in rendezvous(record.doc_id, topology.active_members(region), k)
    )


def stand_ins(
    record: PlacementRecord, topology: Topology, live: Callable[[str], bool]
) -> tuple[str, ...]:
    """The nodes that take a write in place of the holders that are down: for each region of
    :func:`regions_of`, as many of the next live members in rendezvous order (after the
    region's ``nodes_per_region`` holders) as the region has holders down. A stand-in keeps the
    write as a hint and hands it to the holders; the first stand-in is also the node that would
    become the holder if the one that is down were removed."""
    k = topology.nodes_per_region
    chosen: list[str] = []
    for region in regions_of(record, topology):
        order = hrw_order(record.doc_id, region, topology)
        down = sum(1 for node in order[:k] if not live(node))
        if down:
            chosen.extend([node for node in order[k:] if live(node)][:down])
    return tuple(chosen)


# ---------------------------------------------------------------------------------------------
# Placement requests (PUT /v1/docs/{id}/placement)


def resolve_request(body: object, topology: Topology, home: str) -> Policy:
    """The policy a ``PUT /v1/docs/{id}/placement`` body asks for, as parsed JSON.

    The body is ``{"regions": [...]}`` or ``{"replicas": N}``, with an optional ``"pinned"``
    boolean. ``home`` is the document's home region (the caller's own region for a document not
    written yet). A pinned ``{"replicas": N}`` is resolved now to the explicit list of the N
    regions :func:`regions_of` would choose from ``home``: a pin names regions, and must not
    move when the topology changes. Apply the result with :func:`with_policy`.

    Raises :class:`MalformedPlacement` for the wrong shape or JSON types and
    :class:`InvalidPlacement` for values this topology cannot satisfy.
    """
    usage = 'give {"regions": [names...]} or {"replicas": N}, optionally with "pinned": true'
    if not isinstance(body, dict):
        raise MalformedPlacement(f"a placement must be a JSON object: {usage}")
    unknown = sorted(_show(key) for key in body if key not in _REQUEST_KEYS)
    if unknown:
        raise MalformedPlacement(f"unknown placement field {', '.join(unknown)}: {usage}")
    if ("regions" in body) == ("replicas" in body):
        either = "not both" if "regions" in body else "one of them"
        raise MalformedPlacement(f"give either 'regions' or 'replicas', {either}: {usage}")
    pinned = body.get("pinned", False)
    if not isinstance(pinned, bool):
        raise MalformedPlacement(f"'pinned' must be true or false, not {_show(pinned)}")
    if "regions" in body:
        return Policy("regions", _requested_regions(body["regions"], topology), 0, pinned)
    replicas = body["replicas"]
    if not _is_int(replicas):
        raise MalformedPlacement(f"'replicas' must be an integer, not {_show(replicas)}")
    n = len(topology.regions)
    if not 1 <= replicas <= n:
        raise InvalidPlacement(
            f"'replicas' must be from 1 to {n}, the number of regions, not {_show(replicas)}"
        )
    if not pinned:
        return Policy("count", (), replicas, False)
    chosen = nearest_regions(_anchor(home, topology), topology)[:replicas]
    return Policy("regions", tuple(sorted(chosen)), 0, True)


def _requested_regions(value: object, topology: Topology) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise MalformedPlacement(f"'regions' must be a list of region names, not {_show(value)}")
    known = ", ".join(topology.regions)
    if not value:
        raise InvalidPlacement(f"'regions' must name at least one region (known: {known})")
    if len(value) > (n := len(topology.regions)):
        raise InvalidPlacement(f"'regions' names {len(value)} regions; the cluster has {n}")
    for item in value:
        if not isinstance(item, str):
            raise MalformedPlacement(f"'regions' must hold region names, not {_show(item)}")
    unknown = [_show(region) for region in value if region not in topology.regions]
    if unknown:
        raise InvalidPlacement(f"unknown region {', '.join(unknown)} (known: {known})")
    twice = sorted({region for region in value if value.count(region) > 1})
    if twice:
        raise InvalidPlacement(f"'regions' lists {', '.join(twice)} more than once")
    return tuple(sorted(value))
