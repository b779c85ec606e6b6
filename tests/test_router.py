"""The routing decision (app.cluster.router) with plain values: no sockets."""

from __future__ import annotations

import pytest

from app.cluster.placement import Member, PlacementRecord, Policy, Stamp, Topology, with_policy
from app.cluster.router import Route, route

TOPOLOGY = Topology(
    regions=("ap-south", "eu-west", "us-east"),
    latency_ms={
        ("eu-west", "us-east"): 40,
        ("ap-south", "us-east"): 110,
        ("ap-south", "eu-west"): 65,
    },
    replicas=2,
    members=(
        Member("us-east-1", "us-east"),
        Member("us-east-2", "us-east"),
        Member("eu-west-1", "eu-west"),
        Member("ap-south-1", "ap-south"),
    ),
)


def record(doc_id: str = "d", home: str = "eu-west") -> PlacementRecord:
    return PlacementRecord.new(doc_id, home, Stamp(1, "eu-west-1"))


def pinned(doc_id: str = "d") -> PlacementRecord:
    return with_policy(record(doc_id), Policy("regions", ("eu-west",), 0, True), Stamp(2, "x"))


def everyone(node: str) -> bool:
    return True


def nobody(node: str) -> bool:
    return False


def decide(rec: PlacementRecord, here: str, **kwargs: object) -> Route:
    region = TOPOLOGY.region_of(here)
    assert region is not None
    options: dict[str, object] = {
        "live": everyone,
        "write": True,
        "forwarded": False,
        "has_copy": False,
    }
    options.update(kwargs)
    return route(rec, TOPOLOGY, here=here, region=region, **options)  # type: ignore[arg-type]


def test_a_holder_serves_its_document() -> None:
    decision = decide(record(), "eu-west-1")
    assert decision.action == "local"
    assert "eu-west-1" in decision.holders


def test_a_non_holder_forwards_to_the_nearest_live_holder() -> None:
    rec = record()  # eu-west + its nearest, us-east
    us_holder = next(n for n in decide(rec, "ap-south-1").holders if n.startswith("us-east"))
    decision = decide(rec, "ap-south-1")
    assert (decision.action, decision.node) == ("forward", "eu-west-1")
    # eu-west down: the next nearest holder
    decision = decide(rec, "ap-south-1", live=lambda n: n != "eu-west-1")
    assert (decision.action, decision.node) == ("forward", us_holder)
    # a holder already tried is skipped
    decision = decide(rec, "ap-south-1", exclude=frozenset({"eu-west-1"}))
    assert decision.node == us_holder


def test_no_live_holder_a_write_is_a_hint_and_a_read_a_503() -> None:
    rec = record()
    assert decide(rec, "ap-south-1", live=nobody).action == "hint"
    read = decide(rec, "ap-south-1", live=nobody, write=False)
    assert (read.action, read.code) == ("refuse", "holders_unreachable")
    # a copy here (a hint) answers reads meanwhile
    assert decide(rec, "ap-south-1", live=nobody, write=False, has_copy=True).action == "local"


def test_a_pinned_document_is_never_hinted_outside_its_regions() -> None:
    rec = pinned()
    assert decide(rec, "us-east-1").node == "eu-west-1"
    refused = decide(rec, "us-east-1", live=nobody)
    assert (refused.action, refused.code) == ("refuse", "pinned_regions_unreachable")
    assert "eu-west" in refused.reason
    # nor served from a stray copy outside them
    stray = decide(rec, "us-east-1", live=nobody, write=False, has_copy=True)
    assert stray.action == "refuse"


@pytest.mark.parametrize("write", [True, False])
def test_a_forwarded_request_is_never_forwarded_again(write: bool) -> None:
    rec = record()
    decision = decide(rec, "ap-south-1", forwarded=True, write=write)
    assert decision.action in ("hint", "refuse")
    assert decision.node is None
    assert decide(rec, "eu-west-1", forwarded=True).action == "local"


def us_east_order(doc_id: str) -> list[str]:
    from app.cluster.placement import hrw_order

    return hrw_order(doc_id, "us-east", TOPOLOGY)


def test_a_write_goes_to_the_stand_in_of_a_holder_that_is_down() -> None:
    rec = record("d", home="us-east")  # us-east (one holder of two nodes) + eu-west
    holder, spare = us_east_order("d")
    assert holder in decide(rec, "ap-south-1").holders
    down = lambda n: n != holder  # noqa: E731
    # the other us-east node keeps the write here, as a hint
    assert decide(rec, spare, live=down).action == "hint"
    # from a region nearer to the other holder: to that holder
    decision = decide(rec, "ap-south-1", live=down)
    assert (decision.action, decision.node) == ("forward", "eu-west-1")
    # reads go to a live holder, not to the stand-in (it holds only the writes it took)...
    read = decide(rec, "ap-south-1", live=down, write=False)
    assert (read.action, read.node) == ("forward", "eu-west-1")
    # ...unless no copy is live: then what the stand-in took beats a 503
    no_copy = lambda n: n not in (holder, "eu-west-1")  # noqa: E731
    read = decide(rec, "ap-south-1", live=no_copy, write=False)
    assert (read.action, read.node) == ("forward", spare)
    assert decide(rec, "ap-south-1", live=no_copy, write=False, has_copy=True).action == "local"
    read = decide(rec, "ap-south-1", live=lambda n: n == "ap-south-1", write=False)
    assert (read.action, read.code) == ("refuse", "holders_unreachable")
    # a forwarded write that reaches the stand-in is kept there
    assert decide(rec, spare, live=down, forwarded=True).action == "hint"


def test_a_pinned_document_stays_writable_through_a_stand_in_of_its_region() -> None:
    rec = with_policy(
        record("p", home="us-east"), Policy("regions", ("us-east",), 0, True), Stamp(2, "x")
    )
    holder, spare = us_east_order("p")
    down = lambda n: n != holder  # noqa: E731
    # eu-west may not store it; us-east's other node takes the write in its holder's place
    decision = decide(rec, "eu-west-1", live=down)
    assert (decision.action, decision.node) == ("forward", spare)
    assert decide(rec, spare, live=down, forwarded=True).action == "hint"
    # both us-east nodes down: the one refusal
    refused = decide(rec, "eu-west-1", live=lambda n: not n.startswith("us-east"))
    assert refused.code == "pinned_regions_unreachable"
    # a stand-in that failed once is skipped: nobody else in us-east, so refused
    again = decide(rec, "eu-west-1", live=down, exclude=frozenset({spare}))
    assert again.code == "pinned_regions_unreachable"


def test_stand_ins_follow_the_rendezvous_order_of_each_region() -> None:
    from app.cluster.placement import holders, stand_ins

    for i in range(50):
        rec = record(f"doc-{i}", home="us-east")
        holder, spare = us_east_order(rec.doc_id)
        assert holder in holders(rec, TOPOLOGY)
        assert stand_ins(rec, TOPOLOGY, everyone) == ()
        assert stand_ins(rec, TOPOLOGY, lambda n, down=holder: n != down) == (spare,)
        # a region with no spare node (eu-west has one) has no stand-in
        assert stand_ins(rec, TOPOLOGY, lambda n: n != "eu-west-1") == ()
