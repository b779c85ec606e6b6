"""Membership logic with plain values: member entries, the member list and its merge (a CRDT),
the operations that make entries, join checks, the JSON form peers send, the topology placement
sees, and a small seeded gossip among nodes. No sockets, no clock."""

from __future__ import annotations

import json
import random
from functools import reduce
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cluster.membership import (
    MAX_ADDRESS,
    MAX_INCARNATION,
    MAX_MEMBERS,
    STATES,
    MemberEntry,
    Membership,
    MembershipError,
    activate,
    change,
    check_join,
    join,
    leave,
    next_incarnation,
    remove,
    topology,
)
from app.cluster.placement import (
    MAX_MILLIS,
    Member,
    MemberState,
    PlacementError,
    PlacementRecord,
    Stamp,
    StampClock,
    Topology,
    holders,
)

REGIONS = ("ap-south", "eu-west", "us-east")
#: The latencies of the repository's regions.toml.
LATENCY = {("eu-west", "us-east"): 40, ("ap-south", "us-east"): 110, ("ap-south", "eu-west"): 65}
BASE = Topology(REGIONS, LATENCY, replicas=2, nodes_per_region=1)


def entry(
    node: str = "eu-west-1",
    state: MemberState = "active",
    incarnation: int = 1,
    millis: int = 1_000,
    *,
    region: str = "eu-west",
    address: str | None = None,
    weight: float = 1.0,
) -> MemberEntry:
    address = address if address is not None else f"{node}.local:7000"
    return MemberEntry(node, region, address, state, incarnation, Stamp(millis, node), weight)


def order(e: MemberEntry) -> tuple[Any, ...]:
    """The merge rule written out again, independently of the module."""
    return (e.incarnation, STATES.index(e.state), e.stamp, e.region, e.address, e.weight)


# --- entries ------------------------------------------------------------------------------------


def test_entry_fields_and_weight_as_float() -> None:
    e = MemberEntry("us-east-1", "us-east", "10.0.0.7:7101", "joining", 1, Stamp(5, "us-east-1"), 2)
    assert e.weight == 2.0 and isinstance(e.weight, float)
    assert e.live and e.member == Member("us-east-1", "us-east", 2.0, "joining")
    assert e == MemberEntry("us-east-1", "us-east", "10.0.0.7:7101", "joining", 1, e.stamp, 2.0)
    default = MemberEntry("us-east-1", "us-east", "10.0.0.7:7101", "joining", 1, e.stamp)
    assert default.weight == 1.0 and default.merge(e) is e


def test_errors_belong_to_the_cluster_tree() -> None:
    assert issubclass(MembershipError, PlacementError)
    assert issubclass(MembershipError, ValueError)
    assert MembershipError.code == "invalid_membership"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"node": "-bad"}, "node id"),
        ({"node": "n" * 129}, "node id"),
        ({"region": "EU"}, "region"),
        ({"address": "eu-west-1"}, "host:port"),
        ({"address": "h:0"}, "host:port"),
        ({"address": "h:65536"}, "host:port"),
        ({"address": "h:080"}, "host:port"),
        ({"address": "Host:80"}, "host:port"),
        ({"address": "a" * MAX_ADDRESS + ":80"}, "host:port"),
        ({"state": "dead"}, "state"),
        ({"incarnation": 0}, "incarnation"),
        ({"incarnation": -1}, "incarnation"),
        ({"incarnation": True}, "incarnation"),
        ({"incarnation": MAX_INCARNATION + 1}, "incarnation"),
        ({"weight": 0}, "weight"),
        ({"weight": -1.0}, "weight"),
        ({"weight": float("inf")}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": True}, "weight"),
        ({"weight": 10**400}, "weight"),
        ({"stamp": (1, "n")}, "Stamp"),
    ],
)
def test_entry_refuses_bad_fields(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {
        "node": "eu-west-1",
        "region": "eu-west",
        "address": "127.0.0.1:7201",
        "state": "active",
        "incarnation": 1,
        "weight": 1.0,
        "stamp": Stamp(1, "eu-west-1"),
    }
    with pytest.raises(MembershipError, match=message):
        MemberEntry(**(values | fields))


@pytest.mark.parametrize(
    "address", ["127.0.0.1:7201", "[::1]:7201", "[fe80::1:2]:1", "node-7.eu.example.com:65535"]
)
def test_addresses(address: str) -> None:
    assert entry(address=address).address == address


def test_entry_merge_needs_one_node() -> None:
    with pytest.raises(MembershipError, match="cannot merge"):
        entry("eu-west-1").merge(entry("eu-west-2"))


# --- the merge rule -----------------------------------------------------------------------------


def test_higher_incarnation_wins_whatever_the_state() -> None:
    removed = entry(state="removed", incarnation=1, millis=9_000)
    rejoined = entry(state="joining", incarnation=2, millis=1_000)
    assert removed.merge(rejoined) is rejoined and rejoined.merge(removed) is rejoined


def test_state_moves_forward_within_an_incarnation() -> None:
    ladder = [entry(state=state, millis=5_000 - 1_000 * i) for i, state in enumerate(STATES)]
    for lower, higher in pairwise(ladder):
        assert lower.merge(higher) is higher and higher.merge(lower) is higher


def test_later_stamp_wins_within_a_state_then_the_fields_decide() -> None:
    old = entry(millis=1_000, address="10.0.0.1:7201")
    moved = entry(millis=2_000, address="10.0.0.2:7201")
    assert old.merge(moved) is moved and moved.merge(old) is moved
    # Two entries with one stamp (forged, or a bug): every node picks the same one.
    a = entry(millis=3_000, address="10.0.0.1:7201", weight=2.0)
    b = entry(millis=3_000, address="10.0.0.2:7201", weight=1.0)
    assert a.merge(b) is b and b.merge(a) is b
    c = entry(millis=3_000, address="10.0.0.2:7201", weight=3.0)
    assert b.merge(c) is c and c.merge(b) is c


def test_removed_is_absorbing_within_its_incarnation() -> None:
    removed = entry(state="removed", millis=1_000)
    later_active = entry(state="active", millis=9_000, address="10.9.9.9:1")
    members = Membership([removed]).apply(later_active)
    assert members.get("eu-west-1") == removed
    assert members.active() == ()


# Few values, so that equal incarnations, states and stamps (the ties) are common.
small_entries = st.builds(
    MemberEntry,
    node=st.sampled_from(["n1", "n2", "n3"]),
    region=st.sampled_from(["eu-west", "us-east"]),
    address=st.sampled_from(["a:1", "b:2", "c:3"]),
    state=st.sampled_from(STATES),
    incarnation=st.integers(1, 3),
    weight=st.sampled_from([1, 1.0, 2.5]),
    stamp=st.builds(Stamp, st.integers(0, 3), st.sampled_from(["", "n1", "n2"])),
)
lists = st.lists(small_entries, max_size=10).map(Membership)


@given(st.lists(small_entries, min_size=1, max_size=12), st.data())
def test_merge_any_order_duplication_and_grouping(
    changes: list[MemberEntry], data: st.DataObject
) -> None:
    expected = Membership(changes)
    # The winner of every node id, by the rule written out again.
    for node in {e.node for e in changes}:
        assert expected.get(node) == max((e for e in changes if e.node == node), key=order)
    assert len(expected) == len({e.node for e in changes})

    def applied(received: list[MemberEntry]) -> Membership:
        return reduce(Membership.apply, received, Membership())

    assert applied(data.draw(st.permutations(changes))) == expected
    extra = data.draw(st.lists(st.sampled_from(changes), max_size=12))
    received = data.draw(st.permutations(changes + extra))
    assert applied(received) == expected
    # Any grouping: some nodes each fold what they received, then exchange in any order.
    groups = data.draw(st.integers(1, 4))
    where = data.draw(st.lists(st.integers(0, groups - 1), min_size=len(received)))
    parts = [
        applied([e for e, g in zip(received, where, strict=False) if g == i]) for i in range(groups)
    ]
    parts = data.draw(st.permutations(parts))
    assert reduce(Membership.merge, parts) == expected
    assert reduce(Membership.merge, parts).digest() == expected.digest()


@given(lists, lists, lists)
def test_merge_is_a_semilattice(a: Membership, b: Membership, c: Membership) -> None:
    assert a.merge(a) == a
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a.merge(b)) == a.merge(b)
    joined = a.merge(b)
    assert joined.includes(a) and joined.includes(b)
    assert a.includes(b) == (a.merge(b) == a)
    # No copy when nothing changes: equal lists become the same object as gossip goes on.
    if a.includes(b):
        assert a.merge(b) is a
    if b.includes(a) and not a.includes(b):
        assert a.merge(b) is b


@given(lists, lists)
def test_digest_tells_lists_apart(a: Membership, b: Membership) -> None:
    assert (a.digest() == b.digest()) == (a == b)
    assert len(a.digest()) == 32
    if a == b:
        assert hash(a) == hash(b)


@given(st.lists(small_entries, max_size=12), st.data())
def test_a_removed_incarnation_never_comes_back(
    others: list[MemberEntry], data: st.DataObject
) -> None:
    tombstone = entry("n1", "removed", incarnation=2, millis=0, address="a:1")
    # Everything else this node id ever had under incarnations 1 and 2, in any order.
    older = [e for e in others if e.node != "n1" or e.incarnation <= 2]
    received = data.draw(st.permutations([tombstone, *older]))
    members = reduce(Membership.apply, received, Membership())
    assert members.get("n1") is not None
    assert members.get("n1").state == "removed"  # type: ignore[union-attr]
    assert members.get("n1").incarnation == 2  # type: ignore[union-attr]
    assert "n1" not in {e.node for e in members.active()}


def test_a_node_id_rejoins_under_a_new_incarnation() -> None:
    clock = StampClock("eu-west-1", wall=lambda: 1.0)
    first = join("eu-west-2", "eu-west", "10.0.0.2:7201", 1, clock.now())
    active = activate(first, clock.now())
    cluster = Membership([active])
    gone = cluster.apply(remove(active, clock.now()))
    # The node restarts with its old data: its list says active, and merging it changes nothing.
    restarted = Membership([active])
    assert gone.merge(restarted) == gone and restarted.merge(gone) == gone
    assert check_join(gone, first, REGIONS) is not None
    assert next_incarnation(gone, "eu-west-2") == 2
    again = join("eu-west-2", "eu-west", "10.0.0.2:7201", 2, clock.now())
    assert check_join(gone, again, REGIONS) is None
    back = gone.apply(again)
    assert back.get("eu-west-2") == again
    # The old incarnation's entries, still travelling, lose to the new one.
    assert back.merge(restarted).merge(gone) == back
    assert back.apply(active) is back


# --- operations ---------------------------------------------------------------------------------


def test_operations_move_forward_and_repeat_safely() -> None:
    clock = StampClock("us-east-1", wall=lambda: 2.0)
    joining = join("us-east-3", "us-east", "10.1.0.3:7103", 1, clock.now(), weight=2)
    assert (joining.state, joining.incarnation, joining.weight) == ("joining", 1, 2.0)
    active = activate(joining, clock.now())
    assert active.state == "active" and active.stamp > joining.stamp
    assert activate(active, clock.now()) is active
    leaving = leave(active, clock.now())
    assert leave(leaving, clock.now()) is leaving
    removed = remove(leaving, clock.now())
    assert remove(removed, clock.now()) is removed
    assert remove(joining, clock.now()).state == "removed"
    assert leave(joining, clock.now()).state == "leaving"
    with pytest.raises(MembershipError, match="cannot become active"):
        activate(leaving, clock.now())
    with pytest.raises(MembershipError, match="cannot become leaving"):
        leave(removed, clock.now())
    with pytest.raises(MembershipError, match="does not follow"):
        activate(joining, joining.stamp)


def test_change_address_and_weight() -> None:
    clock = StampClock("us-east-1", wall=lambda: 2.0)
    active = activate(join("us-east-3", "us-east", "10.1.0.3:7103", 1, clock.now()), clock.now())
    moved = change(active, clock.now(), address="10.1.0.9:7103")
    assert (moved.address, moved.weight, moved.state) == ("10.1.0.9:7103", 1.0, "active")
    heavier = change(moved, clock.now(), weight=3)
    assert (heavier.address, heavier.weight) == ("10.1.0.9:7103", 3.0)
    assert Membership([active, heavier, moved]).get("us-east-3") == heavier
    with pytest.raises(MembershipError, match="does not follow"):
        change(heavier, heavier.stamp, weight=1.0)
    with pytest.raises(MembershipError, match="removed"):
        change(remove(heavier, clock.now()), clock.now(), weight=1.0)
    with pytest.raises(MembershipError, match="host:port"):
        change(heavier, clock.now(), address="nowhere")


def test_next_incarnation() -> None:
    members = Membership([entry("eu-west-1", incarnation=4)])
    assert next_incarnation(members, "eu-west-1") == 5
    assert next_incarnation(members, "eu-west-9") == 1


# --- join checks --------------------------------------------------------------------------------


def test_check_join() -> None:
    members = Membership(
        [
            entry("eu-west-1", address="10.0.0.1:7201"),
            entry("eu-west-2", "removed", address="10.0.0.2:7201"),
            entry("us-east-1", "leaving", region="us-east", address="10.0.1.1:7101"),
        ]
    )
    stamp = Stamp(5_000, "eu-west-3")
    fresh = join("eu-west-3", "eu-west", "10.0.0.3:7201", 1, stamp)
    assert check_join(members, fresh, REGIONS) is None
    assert check_join(members.apply(fresh), fresh, REGIONS) is None  # a join sent twice
    # The address of a removed member is free again.
    assert (
        check_join(members, join("eu-west-3", "eu-west", "10.0.0.2:7201", 1, stamp), REGIONS)
        is None
    )

    def refused(candidate: MemberEntry, known: tuple[str, ...] = REGIONS) -> str:
        reason = check_join(members, candidate, known)
        assert reason is not None
        return reason

    assert "unknown region 'mars'" in refused(join("mars-1", "mars", "10.9.0.1:1", 1, stamp))
    assert "unknown region" in refused(fresh, ("us-east",))
    assert "held by member eu-west-1" in refused(
        join("eu-west-3", "eu-west", "10.0.0.1:7201", 1, stamp)
    )
    assert "held by member us-east-1 (leaving)" in refused(
        join("eu-west-3", "eu-west", "10.0.1.1:7101", 1, stamp)
    )
    assert "never comes back under the same incarnation" in refused(
        join("eu-west-2", "eu-west", "10.0.0.2:7201", 1, stamp)
    )
    assert (
        check_join(members, join("eu-west-2", "eu-west", "10.0.0.2:7201", 2, stamp), REGIONS)
        is None
    )
    assert "already a member" in refused(join("eu-west-1", "eu-west", "10.0.0.8:7201", 1, stamp))
    assert "state 'joining'" in refused(entry("eu-west-4", address="10.0.0.4:7201"))
    later = Membership([entry("eu-west-1", incarnation=3, address="10.0.0.1:7201")])
    reason = check_join(later, join("eu-west-1", "eu-west", "10.0.0.1:7201", 2, stamp), REGIONS)
    assert reason is not None and "rejoins with incarnation 4, not 2" in reason


def test_check_join_refuses_when_the_list_is_full() -> None:
    full = Membership(
        entry(f"n{i}", address=f"10.{i // 256}.{i % 256}.1:7000") for i in range(MAX_MEMBERS)
    )
    reason = check_join(full, join("x", "eu-west", "10.99.0.1:7000", 1, Stamp(1, "x")), REGIONS)
    assert reason is not None and "full" in reason
    with pytest.raises(MembershipError, match=f"at most {MAX_MEMBERS}"):
        full.apply(join("x", "eu-west", "10.99.0.1:7000", 1, Stamp(1, "x")))
    with pytest.raises(MembershipError, match=f"at most {MAX_MEMBERS}"):
        full.merge(Membership([entry("x", address="10.99.0.1:7000")]))


# --- JSON from peers ----------------------------------------------------------------------------

region_names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
node_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9](?:[a-z0-9.-]{0,40}[a-z0-9])?", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
any_entries = st.builds(
    MemberEntry,
    node=node_ids,
    region=region_names,
    address=st.builds(lambda host, port: f"{host}:{port}", hosts, st.integers(1, 65535)),
    state=st.sampled_from(STATES),
    incarnation=st.integers(1, MAX_INCARNATION),
    weight=st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False),
    stamp=st.builds(Stamp, st.integers(0, MAX_MILLIS), st.one_of(st.just(""), node_ids)),
)


@given(st.lists(any_entries, max_size=8))
def test_json_round_trip(changes: list[MemberEntry]) -> None:
    members = Membership(changes)
    data = members.to_json()
    text = json.dumps(data, allow_nan=False)
    back = Membership.from_json(json.loads(text))
    assert back == members and back.digest() == members.digest()
    assert [e["node"] for e in data["members"]] == sorted(e.node for e in members)
    for item in data["members"]:
        assert MemberEntry.from_json(item) == members.get(item["node"])


def test_conflicting_entries_in_one_message_are_merged() -> None:
    old = entry("eu-west-1", "active", millis=1)
    new = entry("eu-west-1", "removed", millis=2)
    members = Membership.from_json({"members": [new.to_json(), old.to_json(), new.to_json()]})
    assert members.entries() == (new,)


def valid_entry() -> dict[str, Any]:
    return entry("eu-west-1", address="127.0.0.1:7201").to_json()


def without(key: str) -> dict[str, Any]:
    data = valid_entry()
    del data[key]
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        (None, "JSON object"),
        ("members", "JSON object"),
        ({}, "'members' must be a list"),
        ({"members": {}}, "'members' must be a list"),
        ({"members": None}, "'members' must be a list"),
        ({"members": [], "version": 2}, "only field is 'members'"),
        ({"members": [[]]}, "JSON object"),
        ({"members": ["eu-west-1"]}, "JSON object"),
        ({"members": [valid_entry() | {"role": "leader"}]}, "fields are"),
        ({"members": [without("stamp")]}, "needs 'stamp'"),
        ({"members": [without("weight")]}, "needs 'weight'"),
        ({"members": [without("incarnation")]}, "needs 'incarnation'"),
        ({"members": [valid_entry() | {"state": "dead"}]}, "state must be one of"),
        ({"members": [valid_entry() | {"state": 1}]}, "state must be a string"),
        ({"members": [valid_entry() | {"node": 7}]}, "node must be a string"),
        ({"members": [valid_entry() | {"node": "n" * 10_000}]}, "node id"),
        ({"members": [valid_entry() | {"node": "a b"}]}, "node id"),
        ({"members": [valid_entry() | {"region": "eu_west"}]}, "region"),
        ({"members": [valid_entry() | {"region": "r" * 64}]}, "region"),
        ({"members": [valid_entry() | {"region": ["eu-west"]}]}, "region must be a string"),
        ({"members": [valid_entry() | {"address": "x" * 10_000 + ":1"}]}, "host:port"),
        ({"members": [valid_entry() | {"address": 7201}]}, "address must be a string"),
        ({"members": [valid_entry() | {"incarnation": 0}]}, "incarnation"),
        ({"members": [valid_entry() | {"incarnation": -3}]}, "incarnation"),
        ({"members": [valid_entry() | {"incarnation": True}]}, "incarnation"),
        ({"members": [valid_entry() | {"incarnation": 1.0}]}, "incarnation"),
        ({"members": [valid_entry() | {"incarnation": "1"}]}, "incarnation"),
        ({"members": [valid_entry() | {"incarnation": 2**53}]}, "incarnation"),
        ({"members": [valid_entry() | {"weight": False}]}, "weight"),
        ({"members": [valid_entry() | {"weight": "1"}]}, "weight"),
        ({"members": [valid_entry() | {"weight": 0}]}, "weight"),
        ({"members": [valid_entry() | {"weight": json.loads("1e999")}]}, "weight"),
        ({"members": [valid_entry() | {"weight": 10**400}]}, "weight"),
        ({"members": [valid_entry() | {"stamp": [1]}]}, "stamp"),
        ({"members": [valid_entry() | {"stamp": "1"}]}, "stamp"),
        ({"members": [valid_entry() | {"stamp": [True, "n"]}]}, "stamp"),
        ({"members": [valid_entry() | {"stamp": [-1, "n"]}]}, "stamp"),
        ({"members": [valid_entry() | {"stamp": [2**53, "n"]}]}, "stamp"),
        ({"members": [valid_entry() | {"stamp": [1, "a b"]}]}, "stamp"),
        ({"members": [valid_entry() | {"stamp": [1.5, "n"]}]}, "stamp"),
    ],
)
def test_malformed_lists_are_refused(data: object, message: str) -> None:
    with pytest.raises(MembershipError, match=message):
        Membership.from_json(data)


def test_too_many_entries_are_refused_before_reading_them() -> None:
    # Entries that would fail one by one: the length is checked first.
    with pytest.raises(MembershipError, match=f"at most {MAX_MEMBERS} entries"):
        Membership.from_json({"members": [None] * (MAX_MEMBERS + 1)})
    # Distinct valid entries, one too many.
    items = [
        entry(f"n{i}", address=f"10.{i // 256}.{i % 256}.1:7000").to_json()
        for i in range(MAX_MEMBERS + 1)
    ]
    with pytest.raises(MembershipError, match=f"at most {MAX_MEMBERS}"):
        Membership.from_json({"members": items})
    assert len(Membership.from_json({"members": items[:MAX_MEMBERS]})) == MAX_MEMBERS


# --- the topology placement sees ----------------------------------------------------------------


def test_topology_takes_members_from_the_list_and_the_rest_from_the_base() -> None:
    members = Membership(
        [
            entry("eu-west-1", address="10.0.0.1:1"),
            entry("eu-west-2", "joining", address="10.0.0.2:1"),
            entry("eu-west-3", "leaving", address="10.0.0.3:1"),
            entry("eu-west-4", "removed", address="10.0.0.4:1"),
            entry("us-east-1", region="us-east", address="10.0.1.1:1", weight=3.0),
            entry("mars-1", region="mars", address="10.9.0.1:1"),
        ]
    )
    base = Topology(
        REGIONS, LATENCY, replicas=3, nodes_per_region=2, members=(Member("x", "eu-west"),)
    )
    made = topology(members, base)
    assert (made.regions, dict(made.latency_ms)) == (base.regions, dict(base.latency_ms))
    assert (made.replicas, made.nodes_per_region) == (3, 2)
    assert [m.node for m in made.active_members("eu-west")] == ["eu-west-1"]
    assert made.active_members("us-east") == (Member("us-east-1", "us-east", 3.0),)
    assert made.region_of("eu-west-3") == "eu-west" and made.region_of("eu-west-2") == "eu-west"
    assert made.region_of("eu-west-4") is None and made.region_of("x") is None
    record = PlacementRecord.new("notes", "eu-west", Stamp(1, "eu-west-1"))
    assert holders(record, made) == ("eu-west-1", "us-east-1")


@given(st.lists(small_entries, max_size=10), st.sampled_from([f"doc-{i}" for i in range(50)]))
def test_holders_are_active_members(changes: list[MemberEntry], doc_id: str) -> None:
    members = Membership(changes)
    made = topology(members, Topology(("eu-west", "us-east"), {}, replicas=2, nodes_per_region=2))
    active = {e.node for e in members.active()}
    record = PlacementRecord.new(doc_id, "eu-west", Stamp(1, "n1"))
    assert set(holders(record, made)) <= active


# --- gossip among a few nodes, seeded -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_gossip_with_loss_delay_and_reordering_converges(seed: int) -> None:
    """Eight nodes make changes of their own (joins, activations, leaves, removals, rejoins) while
    gossiping full lists to random peers; messages are dropped, delayed and reordered. Every
    node's list only ever grows; once changes stop and gossip runs on, every node holds the one
    list of every change made."""
    rng = random.Random(seed)
    nodes = [f"eu-west-{i}" for i in range(8)]
    clocks = {node: StampClock(node, wall=lambda: 1.0) for node in nodes}
    seeded = Membership(
        activate(join(n, "eu-west", f"10.0.0.{i}:7201", 1, Stamp(1, n)), Stamp(2, n))
        for i, n in enumerate(nodes)
    )
    views = dict.fromkeys(nodes, seeded)
    made: list[MemberEntry] = list(seeded)
    in_flight: list[tuple[int, str, Membership]] = []
    for step in range(200):
        changing = step < 100
        if changing and rng.random() < 0.3:
            node = rng.choice(nodes)
            target = rng.choice(nodes)
            held = views[node].get(target)
            assert held is not None
            clocks[node].observe(held.stamp)
            stamp = clocks[node].now()
            if held.state == "removed":
                new = join(target, "eu-west", held.address, held.incarnation + 1, stamp)
            else:
                following = STATES[min(STATES.index(held.state) + 1, len(STATES) - 1)]
                new = {"active": activate, "leaving": leave, "removed": remove}[following](
                    held, stamp
                )
            made.append(new)
            views[node] = views[node].apply(new)
        for node in nodes:
            for peer in rng.sample([n for n in nodes if n != node], 2):
                if not changing or rng.random() > 0.3:
                    in_flight.append((step + rng.randint(0, 3), peer, views[node]))
        rng.shuffle(in_flight)
        due = [m for m in in_flight if m[0] <= step]
        in_flight = [m for m in in_flight if m[0] > step]
        for _, peer, message in due:
            merged = views[peer].merge(message)
            assert merged.includes(views[peer])
            views[peer] = merged
    expected = Membership(made)
    assert {view.digest() for view in views.values()} == {expected.digest()}
