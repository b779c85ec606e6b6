"""Placement logic with plain values: stamps, records and their merge, regions, rendezvous
hashing, holders, placement requests. No sockets, no storage."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from functools import reduce
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cluster import placement
from app.cluster.placement import (
    MAX_MILLIS,
    MAX_REGIONS,
    InvalidPlacement,
    MalformedPlacement,
    Member,
    MemberState,
    PlacementError,
    PlacementRecord,
    Policy,
    Stamp,
    StampClock,
    Topology,
    allows_content,
    followers,
    holders,
    hrw_order,
    merge,
    move_target,
    nearest_holder,
    nearest_regions,
    regions_of,
    rendezvous,
    resolve_request,
    with_deleted,
    with_follower,
    with_home,
    with_policy,
)
from crdt.records import DOCUMENT_ID

REGIONS = ("ap-south", "eu-west", "us-east")
#: The latencies of the repository's regions.toml.
LATENCY = {("eu-west", "us-east"): 40, ("ap-south", "us-east"): 110, ("ap-south", "eu-west"): 65}
DOC_IDS = [f"doc-{i}" for i in range(10_000)]


def topology(
    replicas: int = 2, nodes_per_region: int = 1, members: tuple[Member, ...] = ()
) -> Topology:
    return Topology(REGIONS, LATENCY, replicas, nodes_per_region, members)


def record(home: str = "eu-west", **policy: Any) -> PlacementRecord:
    return PlacementRecord("notes", home, Stamp(1_000, f"{home}-1"), **policy)


def nodes(members: list[Member]) -> list[str]:
    return [member.node for member in members]


# --- stamps ------------------------------------------------------------------------------------


def test_stamps_order_by_millis_then_node() -> None:
    assert Stamp.ZERO < Stamp(0, "a") < Stamp(1, "a") < Stamp(1, "b") < Stamp(2, "a")


def test_clock_strictly_increases_when_the_wall_clock_goes_back() -> None:
    readings = iter([10.0, 10.0, 9.0, 5.0, 10.0005, 20.0])
    clock = StampClock("eu-west-1", wall=lambda: next(readings))
    stamps = [clock.now() for _ in range(6)]
    assert [s.millis for s in stamps] == [10_000, 10_001, 10_002, 10_003, 10_004, 20_000]
    assert all(s.node == "eu-west-1" for s in stamps)


def test_clock_observe_moves_past_a_remote_stamp() -> None:
    clock = StampClock("eu-west-1", wall=lambda: 1.0)
    remote = Stamp(5_000_000, "us-east-1")
    clock.observe(remote)
    assert clock.now() > remote
    clock.observe(Stamp(3, "ap-south-1"))  # an older stamp changes nothing
    assert clock.now() == Stamp(5_000_002, "eu-west-1")


@pytest.mark.parametrize("millis, node", [(-1, "a"), (MAX_MILLIS + 1, "a"), (True, "a"), (0, "-")])
def test_stamp_refuses_bad_values(millis: Any, node: Any) -> None:
    with pytest.raises(PlacementError, match="stamp"):
        Stamp(millis, node)


# --- rendezvous hashing -------------------------------------------------------------------------


def reference_order(doc_id: str, members: list[Member]) -> list[str]:
    """Weighted HRW written out from the definition, independently of the module."""

    def score(member: Member) -> float:
        key = f"{doc_id}\x00{member.node}".encode()
        h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
        u = ((h >> 12) + 0.5) / 2**52
        assert 0 < u < 1
        return -member.weight / math.log(u)

    return [m.node for m in sorted(members, key=lambda m: (-score(m), m.node))]


SIX = [Member(f"n{i}", "eu-west") for i in range(1, 7)]


@pytest.mark.parametrize(
    "doc_id, expected",
    [
        ("notes", ["n3", "n5", "n2", "n1", "n6", "n4"]),
        ("cart:42", ["n4", "n1", "n3", "n2", "n6", "n5"]),
        ("a", ["n4", "n2", "n1", "n3", "n5", "n6"]),
        ("settings.v2", ["n6", "n5", "n1", "n3", "n4", "n2"]),
    ],
)
def test_rendezvous_is_fixed(doc_id: str, expected: list[str]) -> None:
    """Pinned values: a change of hash or score moves documents between nodes of a cluster."""
    assert nodes(rendezvous(doc_id, SIX, 6)) == expected
    assert nodes(rendezvous(doc_id, list(reversed(SIX)), 2)) == expected[:2]


@given(st.from_regex(DOCUMENT_ID, fullmatch=True), st.lists(st.floats(0.1, 10), min_size=1))
def test_rendezvous_follows_its_definition(doc_id: str, weights: list[float]) -> None:
    members = [Member(f"n{i}", "eu-west", weight) for i, weight in enumerate(weights)]
    assert nodes(rendezvous(doc_id, members, len(members))) == reference_order(doc_id, members)


def test_rendezvous_k_out_of_range() -> None:
    assert rendezvous("notes", SIX, 0) == []
    assert len(rendezvous("notes", SIX, 10)) == 6
    with pytest.raises(ValueError):
        rendezvous("notes", SIX, -1)


def test_rendezvous_spreads_documents_evenly() -> None:
    members = SIX[:4]
    counts = Counter(rendezvous(doc_id, members, 1)[0].node for doc_id in DOC_IDS)
    assert set(counts) == {"n1", "n2", "n3", "n4"}
    assert max(counts.values()) / (len(DOC_IDS) / 4) <= 1.05


def test_rendezvous_shares_follow_weights() -> None:
    members = [Member("heavy", "eu-west", 2.0), Member("n1", "eu-west"), Member("n2", "eu-west")]
    counts = Counter(rendezvous(doc_id, members, 1)[0].node for doc_id in DOC_IDS)
    assert 0.47 <= counts["heavy"] / len(DOC_IDS) <= 0.53
    assert 0.22 <= counts["n1"] / len(DOC_IDS) <= 0.28


def test_a_new_node_takes_only_its_share() -> None:
    old, new = SIX[:4], [*SIX[:4], Member("n9", "eu-west")]
    moved = 0
    for doc_id in DOC_IDS:
        before, after = rendezvous(doc_id, old, 1)[0], rendezvous(doc_id, new, 1)[0]
        if before != after:
            assert after.node == "n9"  # never from one old node to another
            moved += 1
        # With two copies, the new node can only replace one of the old pair.
        pair_before = set(nodes(rendezvous(doc_id, old, 2)))
        assert set(nodes(rendezvous(doc_id, new, 2))) <= pair_before | {"n9"}
    assert 0.18 <= moved / len(DOC_IDS) <= 0.22


# --- regions ------------------------------------------------------------------------------------


def test_nearest_regions() -> None:
    topo = topology()
    assert nearest_regions("eu-west", topo) == ["eu-west", "us-east", "ap-south"]
    assert nearest_regions("ap-south", topo) == ["ap-south", "eu-west", "us-east"]
    assert nearest_regions("us-east", topo) == ["us-east", "eu-west", "ap-south"]
    # A pair with no latency is infinitely far; equal latencies go by name.
    far = Topology((*REGIONS, "sa-east", "af-south"), LATENCY, 2)
    assert nearest_regions("eu-west", far) == [
        "eu-west",
        "us-east",
        "ap-south",
        "af-south",
        "sa-east",
    ]
    assert nearest_regions("sa-east", far) == [
        "sa-east",
        "af-south",
        "ap-south",
        "eu-west",
        "us-east",
    ]


def test_regions_of_default() -> None:
    assert regions_of(record("eu-west"), topology(2)) == ("eu-west", "us-east")
    assert regions_of(record("ap-south"), topology(2)) == ("ap-south", "eu-west")
    assert regions_of(record("us-east"), topology(1)) == ("us-east",)
    assert regions_of(record("us-east"), topology(9)) == ("us-east", "eu-west", "ap-south")


def test_regions_of_count() -> None:
    assert regions_of(record("ap-south", policy="count", count=1), topology()) == ("ap-south",)
    assert regions_of(record("us-east", policy="count", count=3), topology(1)) == (
        "us-east",
        "eu-west",
        "ap-south",
    )
    capped = record("eu-west", policy="count", count=MAX_REGIONS)
    assert regions_of(capped, topology()) == ("eu-west", "us-east", "ap-south")


def test_regions_of_explicit_regions() -> None:
    listed = record("eu-west", policy="regions", regions=("ap-south", "us-east"))
    assert regions_of(listed, topology()) == ("us-east", "ap-south")
    with_home = record("ap-south", policy="regions", regions=("ap-south", "us-east"))
    assert regions_of(with_home, topology()) == ("ap-south", "us-east")
    partly_gone = record("eu-west", policy="regions", regions=("sa-east", "us-east"), pinned=True)
    assert regions_of(partly_gone, topology()) == ("us-east",)
    gone = record("eu-west", policy="regions", regions=("sa-east",), pinned=True)
    assert regions_of(gone, topology()) == ()


def test_regions_of_a_home_the_topology_no_longer_has() -> None:
    """The first region by name stands in for a removed home region."""
    assert regions_of(record("sa-east"), topology(2)) == ("ap-south", "eu-west")
    listed = record("sa-east", policy="regions", regions=("eu-west", "us-east"))
    assert regions_of(listed, topology()) == ("eu-west", "us-east")


# --- holders ------------------------------------------------------------------------------------

MEMBERS = (
    Member("us-east-1", "us-east"),
    Member("us-east-2", "us-east"),
    Member("us-east-3", "us-east"),
    Member("eu-west-1", "eu-west"),
    Member("eu-west-2", "eu-west"),
    Member("ap-south-1", "ap-south"),
)


def test_holders_one_node_per_region() -> None:
    topo = topology(2, 1, MEMBERS)
    for doc_id in ("notes", "cart:42", "a"):
        doc = PlacementRecord.new(doc_id, "eu-west", Stamp(1, "eu-west-1"))
        expected = (hrw_order(doc_id, "eu-west", topo)[0], hrw_order(doc_id, "us-east", topo)[0])
        assert holders(doc, topo) == expected
    assert holders(PlacementRecord.new("notes", "eu-west", Stamp(1, "x")), topo) == (
        "eu-west-2",
        "us-east-3",
    )


def test_holders_two_nodes_per_region() -> None:
    topo = topology(3, 2, MEMBERS)
    doc = PlacementRecord.new("notes", "ap-south", Stamp(1, "ap-south-1"))
    eu, us = hrw_order("notes", "eu-west", topo), hrw_order("notes", "us-east", topo)
    assert sorted(eu) == ["eu-west-1", "eu-west-2"]
    assert len(us) == 3
    # ap-south has one node only; regions in regions_of order, nodes in HRW order.
    assert holders(doc, topo) == ("ap-south-1", *eu, *us[:2])


def test_only_active_members_hold() -> None:
    first = hrw_order("notes", "us-east", topology(members=MEMBERS))
    states: dict[str, MemberState] = {first[0]: "joining", first[1]: "leaving"}
    members = tuple(Member(m.node, m.region, state=states.get(m.node, "active")) for m in MEMBERS)
    topo = topology(1, 2, members)
    assert hrw_order("notes", "us-east", topo) == [first[2]]
    assert holders(record("us-east"), topo) == (first[2],)
    removed = tuple(Member(m.node, m.region, state="removed") for m in MEMBERS)
    assert holders(record("us-east"), topology(3, 1, removed)) == ()


def test_nearest_holder() -> None:
    topo = topology(members=MEMBERS)
    found = ("eu-west-1", "us-east-2", "ap-south-1")
    assert nearest_holder("us-east", found, topo, set(found)) == "us-east-2"
    assert nearest_holder("us-east", found, topo, {"eu-west-1", "ap-south-1"}) == "eu-west-1"
    assert nearest_holder("ap-south", found, topo, lambda node: node != "ap-south-1") == (
        "eu-west-1"
    )
    assert nearest_holder("eu-west", found, topo, frozenset()) is None
    # Equally near: the first given wins; a holder that is not a member is infinitely far.
    live = {*found, "us-east-1"}
    assert nearest_holder("eu-west", ("us-east-2", "us-east-1"), topo, live) == "us-east-2"
    assert nearest_holder("eu-west", ("us-east-3", "us-east-1"), topo, lambda _: True) == (
        "us-east-3"
    )
    assert nearest_holder("eu-west", ("ghost-1", "ap-south-1"), topo, lambda _: True) == (
        "ap-south-1"
    )
    assert nearest_holder("eu-west", ("ghost-1",), topo, lambda _: True) == "ghost-1"


def test_topology_refuses_bad_values() -> None:
    bad: list[dict[str, Any]] = [
        {"regions": ()},
        {"regions": ("eu-west", "eu-west")},
        {"regions": ("EU",)},
        {"latency_ms": {("eu-west", "sa-east"): 1}},
        {"latency_ms": {("eu-west", "eu-west"): 1}},
        {"latency_ms": {("eu-west", "us-east"): -1}},
        {"latency_ms": {("eu-west", "us-east"): math.nan}},
        {"latency_ms": {("eu-west", "us-east"): 1, ("us-east", "eu-west"): 2}},
        {"replicas": 0},
        {"nodes_per_region": 0},
        {"members": (Member("n1", "eu-west"), Member("n1", "us-east"))},
    ]
    for change in bad:
        fields = {"regions": REGIONS, "latency_ms": LATENCY, "replicas": 2, **change}
        with pytest.raises(PlacementError):
            Topology(**fields)
    with pytest.raises(PlacementError):
        Member("n1", "eu-west", weight=0)
    with pytest.raises(PlacementError):
        Member("n1", "eu-west", state="gone")  # type: ignore[arg-type]
    # Either order of a latency pair is accepted, stored as the sorted pair.
    assert Topology(REGIONS, {("us-east", "eu-west"): 40}, 2).latency("eu-west", "us-east") == 40


# --- records and their merge --------------------------------------------------------------------

NODES = ("us-east-1", "eu-west-1", "ap-south-1")
stamps = st.builds(Stamp, st.integers(0, 4), st.sampled_from(NODES))
policies = st.one_of(
    st.just(Policy("default", (), 0, False)),
    st.builds(lambda n: Policy("count", (), n, False), st.integers(1, 3)),
    st.builds(
        lambda names, pinned: Policy("regions", tuple(sorted(names)), 0, pinned),
        st.sets(st.sampled_from(REGIONS), min_size=1),
        st.booleans(),
    ),
)


def make_record(
    doc_id: str,
    home: str,
    born: Stamp,
    policy: Policy,
    changed: Stamp,
    follows: dict[str, tuple[Stamp, bool]] | None = None,
    moved: tuple[str, Stamp] | None = None,
    deleted: int = 0,
) -> Any:
    entries = tuple((region, *follows[region]) for region in sorted(follows or {}))
    return PlacementRecord(
        doc_id,
        home,
        born,
        policy.policy,
        policy.regions,
        policy.count,
        policy.pinned,
        changed,
        entries,
        moved,
        deleted,
    )


#: Few stamps and homes, so that equal stamps and ties are common.
records = st.builds(
    make_record,
    st.just("notes"),
    st.sampled_from(REGIONS),
    stamps,
    policies,
    st.one_of(st.just(Stamp.ZERO), stamps),
    st.dictionaries(st.sampled_from(REGIONS), st.tuples(stamps, st.booleans()), max_size=3),
    st.one_of(st.none(), st.tuples(st.sampled_from(REGIONS), stamps)),
    st.integers(0, 3),
)


@given(st.lists(records, min_size=1, max_size=8), st.data())
def test_merge_any_order_duplication_and_grouping(
    changes: list[PlacementRecord], data: st.DataObject
) -> None:
    expected = reduce(merge, changes)
    first = min(changes, key=lambda r: (r.born, r.home))
    latest = max(changes, key=lambda r: (r.changed, r.policy_fields))
    assert (expected.home, expected.born) == (first.home, first.born)
    assert (expected.policy_fields, expected.changed) == (latest.policy_fields, latest.changed)
    moves = [r.moved for r in changes if r.moved is not None]
    assert expected.moved == max(moves, key=lambda m: (m[1], m[0]), default=None)
    assert expected.deleted == max(r.deleted for r in changes)

    assert reduce(merge, data.draw(st.permutations(changes))) == expected
    extra = data.draw(st.lists(st.sampled_from(changes), max_size=8))
    received = data.draw(st.permutations(changes + extra))
    assert reduce(merge, received) == expected
    # Two partitions each fold what they received, then exchange their results.
    sides = data.draw(st.lists(st.booleans(), min_size=len(received), max_size=len(received)))
    left = [r for r, side in zip(received, sides, strict=True) if side]
    right = [r for r, side in zip(received, sides, strict=True) if not side]
    if left and right:
        assert merge(reduce(merge, left), reduce(merge, right)) == expected
        assert merge(reduce(merge, right), reduce(merge, left)) == expected


@given(records, records, records)
def test_merge_is_a_semilattice(a: PlacementRecord, b: PlacementRecord, c: PlacementRecord) -> None:
    assert merge(a, a) == a
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, merge(a, b)) == merge(a, b)


def test_first_creation_wins_home_and_last_change_wins_policy() -> None:
    # The same id created in two regions during a partition.
    eu = PlacementRecord.new("notes", "eu-west", Stamp(1_000, "eu-west-1"))
    us = PlacementRecord.new("notes", "us-east", Stamp(1_001, "us-east-1"))
    us = with_policy(us, Policy("regions", ("us-east",), 0, True), Stamp(1_002, "us-east-1"))
    merged = merge(eu, us)
    assert merged.home == "eu-west" and merged.born == eu.born
    assert merged.policy_fields == Policy("regions", ("us-east",), 0, True)
    assert merge(us, eu) == merged
    with pytest.raises(ValueError, match="merge"):
        merge(eu, PlacementRecord.new("other", "eu-west", Stamp(1, "eu-west-1")))


def test_a_moved_home_anchors_the_regions_and_the_latest_move_wins() -> None:
    doc = PlacementRecord.new("notes", "us-east", Stamp(1_000, "us-east-1"))
    doc = with_follower(doc, "ap-south", True, Stamp(1_500, "ap-south-1"))
    topology = Topology(
        REGIONS, LATENCY, 1, 1, tuple(Member(f"{region}-1", region) for region in REGIONS)
    )
    assert regions_of(doc, topology) == ("us-east",)
    assert followers(doc, topology) == ("ap-south-1",)
    moved = with_home(doc, "ap-south", Stamp(2_000, "us-east-1"))
    assert moved.current_home == "ap-south" and moved.home == "us-east"
    assert regions_of(moved, topology) == ("ap-south",)
    # The region now holds it: its follower entry is off, so no follower copy either.
    assert moved.followers == (("ap-south", Stamp(2_000, "us-east-1"), False),)
    assert followers(moved, topology) == ()
    back = with_home(moved, "us-east", Stamp(3_000, "ap-south-1"))
    assert merge(moved, back) == merge(back, moved) == back
    assert PlacementRecord.from_json(back.to_json()) == back
    assert back.to_json()["moved"] == ["us-east", [3_000, "ap-south-1"]]
    with pytest.raises(PlacementError, match="does not follow"):
        with_home(back, "eu-west", Stamp(3_000, "ap-south-1"))
    for bad in (["ap-south"], ["AP", [1, "n"]], "ap-south", ["ap-south", [1]]):
        with pytest.raises(PlacementError, match="moved"):
            PlacementRecord.from_json({**doc.to_json(), "moved": bad})


def test_a_home_moves_only_toward_a_follower_copy_of_a_policy_it_chose() -> None:
    members = tuple(Member(f"{region}-1", region) for region in REGIONS)
    topology = Topology(REGIONS, LATENCY, 1, 1, members)
    doc = PlacementRecord.new("notes", "us-east", Stamp(1_000, "us-east-1"))
    assert move_target(doc, topology) is None
    doc = with_follower(doc, "eu-west", True, Stamp(3_000, "eu-west-1"))
    doc = with_follower(doc, "ap-south", True, Stamp(2_000, "ap-south-1"))
    # The follower copy in use the longest.
    assert move_target(doc, topology) == ("ap-south", Stamp(2_000, "ap-south-1"))
    doc = with_follower(doc, "ap-south", False, Stamp(4_000, "ap-south-1"))
    assert move_target(doc, topology) == ("eu-west", Stamp(3_000, "eu-west-1"))
    # A region that holds the document anyway is no target; nor is any for explicit regions.
    two = Topology(REGIONS, LATENCY, 2, 1, members)  # us-east and eu-west hold it
    assert move_target(doc, two) is None
    listed = with_policy(doc, Policy("regions", ("us-east",), 0, False), Stamp(5_000, "n"))
    assert move_target(listed, topology) is None


def test_with_policy_needs_a_later_stamp() -> None:
    doc = with_policy(record(), Policy("count", (), 3, False), Stamp(2_000, "eu-west-1"))
    assert (doc.policy, doc.count, doc.changed) == ("count", 3, Stamp(2_000, "eu-west-1"))
    with pytest.raises(PlacementError, match="does not follow"):
        with_policy(doc, Policy("default", (), 0, False), Stamp(2_000, "eu-west-1"))
    with pytest.raises(PlacementError, match="policy 'count'"):
        with_policy(doc, Policy("count", (), 0, False), Stamp(3_000, "eu-west-1"))


def test_allows_content() -> None:
    pinned = record(policy="regions", regions=("eu-west",), pinned=True)
    assert allows_content(pinned, "eu-west")
    assert not allows_content(pinned, "us-east")
    unpinned = record(policy="regions", regions=("eu-west",))
    assert allows_content(unpinned, "us-east")
    assert allows_content(record(), "ap-south")


def test_document_ids_are_those_of_the_store() -> None:
    assert placement._DOCUMENT_ID.pattern == DOCUMENT_ID.pattern


# --- JSON form of records -----------------------------------------------------------------------

region_names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
node_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)
any_stamps = st.builds(Stamp, st.integers(0, MAX_MILLIS), node_ids)
any_policies = st.one_of(
    st.just(Policy("default", (), 0, False)),
    st.builds(lambda n: Policy("count", (), n, False), st.integers(1, MAX_REGIONS)),
    st.builds(
        lambda names, pinned: Policy("regions", tuple(sorted(names)), 0, pinned),
        st.sets(region_names, min_size=1, max_size=MAX_REGIONS),
        st.booleans(),
    ),
)
any_records = st.builds(
    make_record,
    st.from_regex(DOCUMENT_ID, fullmatch=True),
    region_names,
    any_stamps,
    any_policies,
    st.one_of(st.just(Stamp.ZERO), any_stamps),
    st.dictionaries(region_names, st.tuples(any_stamps, st.booleans()), max_size=4),
)


@given(any_records)
def test_json_round_trip(doc: PlacementRecord) -> None:
    data = doc.to_json()
    assert PlacementRecord.from_json(data) == doc
    assert all(isinstance(key, str) for key in data)
    assert set(data) <= {
        "doc_id",
        "home",
        "born",
        "policy",
        "regions",
        "count",
        "pinned",
        "changed",
        "followers",
    }


def test_json_leaves_out_defaults() -> None:
    assert record().to_json() == {
        "doc_id": "notes",
        "home": "eu-west",
        "born": [1_000, "eu-west-1"],
        "policy": "default",
    }
    pinned = with_policy(record(), Policy("regions", ("eu-west",), 0, True), Stamp(2, "n"))
    assert pinned.to_json()["pinned"] is True and pinned.to_json()["changed"] == [2, "n"]


VALID: dict[str, Any] = {
    "doc_id": "notes",
    "home": "eu-west",
    "born": [1_000, "eu-west-1"],
    "policy": "regions",
    "regions": ["eu-west", "us-east"],
    "pinned": True,
    "changed": [2_000, "us-east-1"],
}
MISSING = object()
BASE: dict[str, Any] = {"doc_id": "n", "home": "eu-west", "born": [1, "a"]}


@pytest.mark.parametrize(
    "key, value",
    [
        ("extra", 1),
        ("doc_id", MISSING),
        ("doc_id", 5),
        ("doc_id", "-notes"),
        ("doc_id", "n" * 129),
        ("home", MISSING),
        ("home", "EU-WEST"),
        ("home", "e" * 64),
        ("home", None),
        ("born", MISSING),
        ("born", "1000"),
        ("born", [1_000]),
        ("born", [1_000, "eu-west-1", 1]),
        ("born", ["1000", "eu-west-1"]),
        ("born", [True, "eu-west-1"]),
        ("born", [1_000.0, "eu-west-1"]),
        ("born", [-1, "eu-west-1"]),
        ("born", [MAX_MILLIS + 1, "eu-west-1"]),
        ("born", [1_000, 7]),
        ("born", [1_000, "x" * 10_000]),
        ("policy", MISSING),
        ("policy", "everywhere"),
        ("policy", None),
        ("policy", []),  # unhashable: was a TypeError, which a peer link did not catch
        ("policy", {}),
        ("moved", ["eu-west"]),
        ("moved", [["eu-west"], [1, "n"]]),
        ("regions", "eu-west"),
        ("regions", []),
        ("regions", [1]),
        ("regions", ["us-east", "eu-west"]),
        ("regions", ["eu-west", "eu-west"]),
        ("regions", ["EU"]),
        ("regions", ["r" * 64]),
        ("regions", [f"r{i:03}" for i in range(MAX_REGIONS + 1)]),
        ("regions", ["eu-west"] * 1_000_000),
        ("count", 2),
        ("pinned", "yes"),
        ("pinned", 1),
        ("changed", [2_000]),
        ("changed", None),
        ("deleted", -1),
        ("deleted", 1.5),
        ("deleted", "3"),
        ("deleted", True),
        ("deleted", 2**53),
    ],
)
def test_from_json_refuses_malformed_records(key: str, value: object) -> None:
    data = dict(VALID)
    if value is MISSING:
        del data[key]
    else:
        data[key] = value
    with pytest.raises(PlacementError) as caught:
        PlacementRecord.from_json(data)
    message = str(caught.value)
    assert key in message or key.rstrip("s") in message
    assert len(message) < 400  # huge peer input is never echoed back whole


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "notes",
        {**BASE, "policy": "count"},
        {**BASE, "policy": "count", "count": True},
        {**BASE, "policy": "count", "count": -1},
        {**BASE, "policy": "count", "count": 1.0},
        {**BASE, "policy": "count", "count": 65},
        {**BASE, "policy": "default", "pinned": True},
        {**BASE, "policy": "default", "count": 1},
        {**BASE, "policy": "count", "count": 1, "regions": ["eu-west"]},
    ],
)
def test_from_json_refuses_records_that_break_invariants(data: object) -> None:
    with pytest.raises(PlacementError):
        PlacementRecord.from_json(data)


# --- placement requests -------------------------------------------------------------------------


PINNED_EU_US = Policy("regions", ("eu-west", "us-east"), 0, True)
PINNED_AP_EU = Policy("regions", ("ap-south", "eu-west"), 0, True)


@pytest.mark.parametrize(
    "body, home, expected",
    [
        ({"regions": ["us-east"]}, "eu-west", Policy("regions", ("us-east",), 0, False)),
        (
            {"regions": ["us-east", "ap-south"], "pinned": True},
            "eu-west",
            Policy("regions", ("ap-south", "us-east"), 0, True),
        ),
        (
            {"regions": ["eu-west"], "pinned": False},
            "eu-west",
            Policy("regions", ("eu-west",), 0, False),
        ),
        ({"replicas": 2}, "eu-west", Policy("count", (), 2, False)),
        ({"replicas": 3, "pinned": False}, "ap-south", Policy("count", (), 3, False)),
        # A pinned count is resolved to the regions it means now, nearest to home first.
        ({"replicas": 2, "pinned": True}, "eu-west", PINNED_EU_US),
        ({"replicas": 2, "pinned": True}, "ap-south", PINNED_AP_EU),
        ({"replicas": 1, "pinned": True}, "sa-east", Policy("regions", ("ap-south",), 0, True)),
    ],
)
def test_resolve_request(body: object, home: str, expected: Policy) -> None:
    resolved = resolve_request(body, topology(), home)
    assert resolved == expected
    doc = with_policy(record(home), resolved, Stamp(5_000, "eu-west-1"))
    assert doc.policy_fields == expected


@pytest.mark.parametrize(
    "body, error, fragment",
    [
        (None, MalformedPlacement, "JSON object"),
        (["eu-west"], MalformedPlacement, "JSON object"),
        ("eu-west", MalformedPlacement, "JSON object"),
        ({}, MalformedPlacement, "one of them"),
        ({"pinned": True}, MalformedPlacement, "one of them"),
        ({"regions": ["eu-west"], "replicas": 1}, MalformedPlacement, "not both"),
        ({"regions": ["eu-west"], "home": "eu-west"}, MalformedPlacement, "'home'"),
        ({"replicas": 1, "Pinned": True}, MalformedPlacement, "'Pinned'"),
        ({"regions": "eu-west"}, MalformedPlacement, "list of region names"),
        ({"regions": {"eu-west": 1}}, MalformedPlacement, "list of region names"),
        ({"regions": [1]}, MalformedPlacement, "region names, not 1"),
        ({"regions": [None]}, MalformedPlacement, "region names, not None"),
        ({"regions": []}, InvalidPlacement, "at least one region"),
        ({"regions": ["sa-east"]}, InvalidPlacement, "unknown region 'sa-east'"),
        ({"regions": ["eu-west", "EU-WEST"]}, InvalidPlacement, "unknown region 'EU-WEST'"),
        ({"regions": ["eu-west", "eu-west"]}, InvalidPlacement, "eu-west more than once"),
        ({"regions": ["eu-west"] * 4}, InvalidPlacement, "names 4 regions; the cluster has 3"),
        ({"regions": ["x"] * 1_000_000}, InvalidPlacement, "the cluster has 3"),
        ({"replicas": 0}, InvalidPlacement, "from 1 to 3"),
        ({"replicas": -1}, InvalidPlacement, "from 1 to 3"),
        ({"replicas": 4}, InvalidPlacement, "from 1 to 3"),
        ({"replicas": 10**100}, InvalidPlacement, "from 1 to 3"),
        ({"replicas": True}, MalformedPlacement, "an integer, not True"),
        ({"replicas": 2.0}, MalformedPlacement, "an integer, not 2.0"),
        ({"replicas": "2"}, MalformedPlacement, "an integer, not '2'"),
        ({"replicas": None}, MalformedPlacement, "an integer"),
        ({"replicas": 2, "pinned": "true"}, MalformedPlacement, "'pinned' must be true or false"),
        ({"regions": ["eu-west"], "pinned": 1}, MalformedPlacement, "'pinned'"),
        ({"regions": ["eu-west"], "pinned": None}, MalformedPlacement, "'pinned'"),
    ],
)
def test_resolve_request_refuses_bad_bodies(
    body: object, error: type[PlacementError], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        resolve_request(body, topology(), "eu-west")
    assert fragment in str(caught.value)
    assert len(str(caught.value)) < 400
    assert isinstance(caught.value, ValueError)
    assert caught.value.code in {"malformed_placement", "invalid_placement"}


def test_a_record_keeps_the_highest_deleted_incarnation() -> None:
    doc = record("us-east")
    assert with_deleted(doc, 0) is doc and "deleted" not in doc.to_json()
    three = with_deleted(doc, 3)
    assert with_deleted(three, 2) is three
    assert (
        merge(three, with_deleted(doc, 5)).deleted
        == merge(with_deleted(doc, 5), three).deleted
        == 5
    )
    assert three.to_json()["deleted"] == 3
    assert PlacementRecord.from_json(three.to_json()) == three
