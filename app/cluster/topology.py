"""The cluster as placement sees it: regions, the latencies between them, the members and
their states, and rendezvous hashing over a region's members.

A :class:`Topology` is what placement needs of the cluster: regions, latencies between them,
the default number of regions, nodes per region and the member list (any state; only
``active`` members hold documents). :func:`rendezvous` is weighted highest-random-weight
hashing: each member's chance to come first is proportional to its weight, and a member that
joins takes only its share. Pure: no I/O, no clock, no randomness, no ``hash()`` — the same
answer in every process. :mod:`app.cluster.placement` builds records and holders on it, and
re-exports every public name here.

:class:`PlacementError` (a ``ValueError``) is anything placement refuses, a topology, a member
or a record received from a peer alike; the message says which field and why.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Final, Literal, TypeAlias

__all__ = [
    "MAX_REGIONS",
    "Member",
    "MemberState",
    "PlacementError",
    "Topology",
    "hrw_order",
    "nearest_holder",
    "nearest_regions",
    "rendezvous",
]

MemberState: TypeAlias = Literal["joining", "active", "leaving", "removed"]

#: Regions one record or topology names at most (peer input is bounded before it is used).
MAX_REGIONS: Final = 64
#: Region names, as ``regions.toml`` allows them (app.config): 63 characters at most.
_REGION_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: Node ids: ``<region>-<n>`` from regions.toml, or any name of this shape from membership.
_NODE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MEMBER_STATES: Final = ("joining", "active", "leaving", "removed")


class PlacementError(ValueError):
    """A value placement refuses; the message says which field and why."""

    code: ClassVar[str] = "invalid_placement_record"


def _show(value: object) -> str:
    """``repr`` cut short: peer input may be huge."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _name(value: object, pattern: re.Pattern[str]) -> bool:
    return isinstance(value, str) and len(value) <= 128 and pattern.fullmatch(value) is not None


def _need(ok: bool, rule: str, value: object) -> None:
    """Raise ``PlacementError("<rule>, not <value>")`` unless ``ok``."""
    if not ok:
        raise PlacementError(f"{rule}, not {_show(value)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Member:
    """A node as placement sees it. Only ``active`` members hold documents: ``joining`` ones
    are not holders yet (they sync their share first), ``leaving`` and ``removed`` ones no
    longer are. Raises :class:`PlacementError` on a bad node id, region, weight or state."""

    #: The node's id, hashed with the document id by rendezvous hashing.
    node: str
    #: The region the node runs in.
    region: str
    #: The node's relative share of its region's documents (positive, finite).
    weight: float = 1.0
    #: The member's state in the replicated member list.
    state: MemberState = "active"

    def __post_init__(self) -> None:
        _need(_name(self.node, _NODE_ID), "a member's node must be a node id", self.node)
        _need(_name(self.region, _REGION_NAME), "a member's region must be a region", self.region)
        ok = _is_number(self.weight) and 0 < self.weight < math.inf
        _need(ok, f"member {self.node}'s weight must be positive and finite", self.weight)
        states = ", ".join(_MEMBER_STATES)
        _need(self.state in _MEMBER_STATES, f"member {self.node}'s state is {states}", self.state)


@dataclass(frozen=True, slots=True)
class Topology:
    """What placement needs of the cluster. Raises :class:`PlacementError` on no regions or
    more than :data:`MAX_REGIONS`, a duplicate region, a latency between unknown regions, of a
    region to itself or negative, two latencies for one pair, ``replicas`` or
    ``nodes_per_region`` below 1, or two members with one node id. Regions are stored sorted and
    latency keys as sorted pairs. Members of regions that are not listed are ignored."""

    #: Every region, sorted by name.
    regions: tuple[str, ...]
    #: One-way latency in milliseconds, keyed by the sorted pair; a missing pair is infinitely
    #: far (ties between regions are broken by name).
    latency_ms: Mapping[tuple[str, str], float] = field(hash=False)
    #: How many regions hold a document of policy ``default``.
    replicas: int
    #: How many nodes of each of its regions hold a document.
    nodes_per_region: int = 1
    #: The member list, any state.
    members: tuple[Member, ...] = ()
    #: Active members by region: the candidates of rendezvous hashing.
    _active: Mapping[str, tuple[Member, ...]] = field(init=False, repr=False, compare=False)
    #: The region of every member, any state: where a holder is.
    _region_of: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regions = tuple(sorted(self.regions))
        ok = 0 < len(regions) <= MAX_REGIONS and len(set(regions)) == len(regions)
        ok = ok and all(_name(region, _REGION_NAME) for region in regions)
        _need(ok, f"a topology has 1 to {MAX_REGIONS} distinct region names", self.regions)
        latency: dict[tuple[str, str], float] = {}
        for (a, b), value in self.latency_ms.items():
            pair = (min(a, b), max(a, b))
            ok = a != b and a in regions and b in regions
            _need(ok, "a latency is between two different regions of the topology", (a, b))
            _need(_is_number(value) and value >= 0, f"latency {a}:{b} must be >= 0", value)
            _need(latency.get(pair, value) == value, f"latency {a}:{b} is given twice", value)
            latency[pair] = float(value)
        for name in ("replicas", "nodes_per_region"):
            value = getattr(self, name)
            _need(_is_int(value) and value >= 1, f"{name} must be an integer >= 1", value)
        members = tuple(self.members)
        nodes = [member.node for member in members]
        _need(len(set(nodes)) == len(nodes), "a topology's members have distinct nodes", nodes)
        active = {
            region: tuple(m for m in members if m.region == region and m.state == "active")
            for region in regions
        }
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "latency_ms", MappingProxyType(latency))
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "_active", MappingProxyType(active))
        object.__setattr__(
            self, "_region_of", MappingProxyType({m.node: m.region for m in members})
        )

    def latency(self, a: str, b: str) -> float:
        """Milliseconds from region ``a`` to ``b``: 0 when equal, ``math.inf`` when unknown."""
        if a == b:
            return 0.0
        return self.latency_ms.get((min(a, b), max(a, b)), math.inf)

    def active_members(self, region: str) -> tuple[Member, ...]:
        """The members of ``region`` that hold documents (state ``active``)."""
        return self._active.get(region, ())

    def region_of(self, node: str) -> str | None:
        """The region of member ``node`` in any state; None when it is not a member."""
        return self._region_of.get(node)


def nearest_regions(origin: str, topology: Topology) -> list[str]:
    """Every region of the topology, nearest to ``origin`` first (``origin`` itself first when it
    is one of them); equal latencies in name order."""
    return sorted(topology.regions, key=lambda r: (r != origin, topology.latency(origin, r), r))


def _score(doc_id: str, member: Member) -> float:
    """Weighted rendezvous score ``-weight / ln(u)``: u from blake2b-64 of the pair, its top 52
    bits ``h`` mapped to ``(h + 0.5) / 2**52``, exactly, strictly between 0 and 1."""
    digest = hashlib.blake2b(f"{doc_id}\x00{member.node}".encode(), digest_size=8).digest()
    u = ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2**52
    return -member.weight / math.log(u)


def rendezvous(doc_id: str, members: Iterable[Member], k: int) -> list[Member]:
    """The ``k`` members with the highest weighted rendezvous (HRW) score for ``doc_id``, best
    first, equal scores by node id. A member's chance to come first is proportional to its
    weight; adding a member only ever moves documents to it. Raises ValueError when k < 0."""
    if k < 0:
        raise ValueError(f"k must be at least 0, not {k}")
    return sorted(members, key=lambda m: (-_score(doc_id, m), m.node))[:k]


def hrw_order(doc_id: str, region: str, topology: Topology) -> list[str]:
    """Every active member of ``region`` in rendezvous order for ``doc_id``: the holders first,
    then the nodes to try next when a holder is down."""
    members = topology.active_members(region)
    return [m.node for m in rendezvous(doc_id, members, len(members))]


def nearest_holder(
    from_region: str,
    holders: Sequence[str],
    topology: Topology,
    live: Callable[[str], bool] | AbstractSet[str],
) -> str | None:
    """The live holder nearest to ``from_region``: among equally near ones the first given
    (give them in :func:`holders` order). ``live`` is a predicate or a set of live node ids; a
    holder that is not a member counts as infinitely far. None when no holder is live."""
    is_live = live.__contains__ if isinstance(live, AbstractSet) else live
    best: str | None = None
    best_latency = math.inf
    for node in holders:
        if not is_live(node):
            continue
        region = topology.region_of(node)
        latency = math.inf if region is None else topology.latency(from_region, region)
        if best is None or latency < best_latency:
            best, best_latency = node, latency
    return best
