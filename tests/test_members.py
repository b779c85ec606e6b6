"""A node's member list (app.cluster.members) and what a change of it does to placement
(PlacementCatalog.set_topology): plain values, a real members.json, a real store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.cluster.catalog import PlacementCatalog
from app.cluster.members import MemberList, listed_entries
from app.cluster.membership import Membership, MembershipError, activate, join, leave, remove
from app.cluster.placement import PlacementRecord, Stamp, Topology, holders
from crdt import open_store

BASE = Topology(
    regions=("eu-west", "us-east"), latency_ms={("eu-west", "us-east"): 40.0}, replicas=1
)
LISTED = listed_entries(
    [("us-east-1", "us-east", "127.0.0.1:7101"), ("eu-west-1", "eu-west", "127.0.0.1:7201")]
)


def members(path: Path | None = None, node: str = "us-east-1") -> MemberList:
    return MemberList(BASE, node_id=node, listed=LISTED, path=path)


def test_the_listed_nodes_are_active_members_everywhere_alike() -> None:
    a, b = members(node="us-east-1"), members(node="eu-west-1")
    assert a.membership == b.membership
    assert [e.state for e in a.membership.entries()] == ["active", "active"]
    assert a.me is not None and a.me.node == "us-east-1"
    assert a.incoming() is None
    assert {m.node for m in a.topology.members} == {"us-east-1", "eu-west-1"}


def test_changes_are_kept_in_members_json_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    first = members(path)
    seen: list[Membership] = []
    first.on_change.append(seen.append)
    entry = join("us-east-j1a2b3c", "us-east", "127.0.0.1:7103", 1, first.clock.now())
    assert first.apply(entry)
    assert not first.apply(entry)  # the same entry again changes nothing
    assert len(seen) == 1
    assert first.transitions["joining"] == 1
    again = members(path)
    assert again.membership == first.membership
    # A later stamp than any entry in the file, even after a restart.
    assert again.clock.now() > entry.stamp
    assert json.loads(path.read_text())["members"][2]["state"] == "joining"


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    path.write_text('{"members": [{"node": 1}]}')
    with pytest.raises(MembershipError, match="damaged"):
        members(path)


def test_entries_of_unknown_regions_are_refused_the_rest_merges() -> None:
    list_ = members()
    stamp = Stamp(5, "mars-1")
    incoming = Membership(
        [
            join("mars-1", "mars", "127.0.0.1:9", 1, stamp),
            join("us-east-j000001", "us-east", "127.0.0.1:7104", 1, stamp),
        ]
    )
    assert list_.merge(incoming, source="eu-west-1")
    assert list_.get("mars-1") is None
    assert list_.get("us-east-j000001") is not None
    assert list_.refused == 1


def test_a_joining_member_receives_its_share_before_it_serves_it() -> None:
    list_ = members()
    joining = join("us-east-j000001", "us-east", "127.0.0.1:7104", 1, list_.clock.now())
    list_.apply(joining)
    incoming = list_.incoming()
    assert incoming is not None
    docs = [f"d{i}" for i in range(200)]
    records = [PlacementRecord.new(d, "us-east", Stamp(1, "us-east-1")) for d in docs]
    # It holds nothing yet (routing), but it will hold about half of us-east's documents.
    assert all(holders(r, list_.topology) == ("us-east-1",) for r in records)
    share = [r for r in records if holders(r, incoming) == ("us-east-j000001",)]
    assert 60 < len(share) < 140
    list_.apply(activate(joining, list_.clock.now()))
    assert list_.incoming() is None
    assert all(holders(r, list_.topology) == holders(r, incoming) for r in records)
    # Leaving, it holds nothing again; removed, it is not even in the topology.
    me = list_.get("us-east-j000001")
    assert me is not None
    list_.apply(leave(me, list_.clock.now()))
    assert all(holders(r, list_.topology) == ("us-east-1",) for r in records)
    me = list_.get("us-east-j000001")
    assert me is not None
    list_.apply(remove(me, list_.clock.now()))
    assert list_.topology.region_of("us-east-j000001") is None


def test_a_topology_change_tells_what_this_node_gains_and_loses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(tmp_path) as store:
            list_ = members()
            catalog = PlacementCatalog(store, list_.topology, node_id="us-east-1", region="us-east")
            docs = [f"d{i}" for i in range(100)]
            for doc_id in docs:
                await catalog.ensure(PlacementRecord.new(doc_id, "us-east", Stamp(1, "us-east-1")))
            changes: list[tuple[list[str], list[str]]] = []
            catalog.on_topology.append(lambda gained, lost: changes.append((gained, lost)))
            joining = join("us-east-j000001", "us-east", "127.0.0.1:7104", 1, list_.clock.now())
            list_.apply(joining)
            catalog.set_topology(list_.topology, list_.incoming())
            # Joining: us-east-1 keeps every copy, and the joiner keeps its share too.
            assert changes[-1] == ([], [])
            kept = [d for d in docs if catalog.holds(catalog.get(d), "us-east-j000001")]  # type: ignore[arg-type]
            assert 20 < len(kept) < 80
            assert all(catalog.holds(catalog.get(d)) for d in docs)  # type: ignore[arg-type]
            list_.apply(activate(joining, list_.clock.now()))
            catalog.set_topology(list_.topology, list_.incoming())
            # Active: us-east-1 gives up exactly the joiner's share.
            assert changes[-1] == ([], sorted(kept))

    asyncio.run(scenario())
