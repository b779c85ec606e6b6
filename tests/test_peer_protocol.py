"""The peer protocol with bytes alone: handshake, authentication, versions, hostile frames."""

from __future__ import annotations

import itertools
import random

import pytest

from app.replication import messages as m
from app.replication.outbox import Delta, Outbox
from app.replication.protocol import (
    Closed,
    Identity,
    Opened,
    PeerProtocol,
    Received,
    RoundTrip,
    State,
)

SECRET = b"s3cret"


def identity(node: str, *, secret: bytes = SECRET, cluster: str = "test") -> Identity:
    return Identity(cluster, node, node.rsplit("-", 1)[0], f"storage-{node}", secret)


def pair(
    dialer: Identity | None = None,
    acceptor: Identity | None = None,
    *,
    dialer_versions: tuple[int, int] = (1, 1),
    acceptor_versions: tuple[int, int] = (1, 1),
    admit: object = None,
) -> tuple[PeerProtocol, PeerProtocol]:
    clock = itertools.count(1.0, 0.5)
    d = PeerProtocol(
        "dialer",
        dialer or identity("eu-west-1"),
        expected_node="us-east-1",
        versions=dialer_versions,
        clock=lambda: next(clock),
    )
    a = PeerProtocol(
        "acceptor",
        acceptor or identity("us-east-1"),
        admit=admit if callable(admit) else None,  # type: ignore[arg-type]
        versions=acceptor_versions,
        clock=lambda: next(clock),
    )
    return d, a


def pump(d: PeerProtocol, a: PeerProtocol) -> tuple[list[object], list[object]]:
    """Moves frames both ways until neither side has anything to send."""
    d_events: list[object] = []
    a_events: list[object] = []
    while True:
        to_a, to_d = d.data_to_send(), a.data_to_send()
        if not to_a and not to_d:
            return d_events, a_events
        for frame in to_a:
            a.receive_data(frame)
        for frame in to_d:
            d.receive_data(frame)
        d_events += d.events_received()
        a_events += a.events_received()


def opened_pair() -> tuple[PeerProtocol, PeerProtocol]:
    d, a = pair()
    d.start()
    pump(d, a)
    assert d.state is State.OPEN and a.state is State.OPEN
    return d, a


def test_handshake_opens_both_sides_and_names_the_peer() -> None:
    d, a = pair()
    d.start()
    d_events, a_events = pump(d, a)
    assert [type(e) for e in d_events] == [Opened]
    assert [type(e) for e in a_events] == [Opened]
    assert d_events[0].peer.node == "us-east-1"  # type: ignore[attr-defined]
    assert a_events[0].peer.node == "eu-west-1"  # type: ignore[attr-defined]
    assert a_events[0].peer.storage_id == "storage-eu-west-1"  # type: ignore[attr-defined]


def test_the_secret_never_crosses_the_wire() -> None:
    secret = b"a-very-recognisable-secret-value"
    d, a = pair(identity("eu-west-1", secret=secret), identity("us-east-1", secret=secret))
    d.start()
    frames: list[bytes] = []
    while True:
        to_a, to_d = d.data_to_send(), a.data_to_send()
        if not to_a and not to_d:
            break
        frames += to_a + to_d
        for f in to_a:
            a.receive_data(f)
        for f in to_d:
            d.receive_data(f)
    assert a.state is State.OPEN
    assert not any(secret in frame for frame in frames)


@pytest.mark.parametrize("wrong_side", ["dialer", "acceptor"])
def test_a_wrong_secret_is_refused_by_the_side_that_checks_it(wrong_side: str) -> None:
    bad = identity("eu-west-1" if wrong_side == "dialer" else "us-east-1", secret=b"wrong")
    d, a = pair(dialer=bad) if wrong_side == "dialer" else pair(acceptor=bad)
    d.start()
    d_events, a_events = pump(d, a)
    assert d.state is State.CLOSED and a.state is State.CLOSED
    closes = [e for e in d_events + a_events if isinstance(e, Closed)]
    assert {c.code for c in closes} == {"authentication_failed"}
    # Both sides know (and the transport logs) why; neither opened.
    assert not any(isinstance(e, Opened) for e in d_events + a_events)
    assert len(closes) == 2 and {c.by_peer for c in closes} == {True, False}


def test_incompatible_versions_are_refused_with_both_ranges() -> None:
    d, a = pair(dialer_versions=(2, 3), acceptor_versions=(1, 1))
    d.start()
    d_events, _ = pump(d, a)
    closed = [e for e in d_events if isinstance(e, Closed)]
    assert closed and closed[0].code == "incompatible_version"
    assert "2..3" in closed[0].reason and "1..1" in closed[0].reason


def test_a_version_1_node_and_this_one_agree_on_1() -> None:
    d, a = pair(dialer_versions=(1, 1), acceptor_versions=(1, 2))
    d.start()
    d_events, _ = pump(d, a)
    assert d_events[0].peer.version == 1  # type: ignore[attr-defined]


def test_overlapping_versions_agree_on_the_highest_common() -> None:
    d, a = pair(dialer_versions=(1, 3), acceptor_versions=(1, 2))
    d.start()
    d_events, _ = pump(d, a)
    assert d_events[0].peer.version == 2  # type: ignore[attr-defined]


def test_wrong_cluster_and_unknown_nodes_are_refused() -> None:
    d, a = pair(dialer=identity("eu-west-1", cluster="other"))
    d.start()
    d_events, _ = pump(d, a)
    assert [e.code for e in d_events if isinstance(e, Closed)] == ["wrong_cluster"]

    d, a = pair(admit=lambda node, region: f"{node} is not a member")
    d.start()
    d_events, _ = pump(d, a)
    assert [e.code for e in d_events if isinstance(e, Closed)] == ["unknown_node"]


def test_a_dialer_refuses_an_unexpected_node() -> None:
    d, a = pair(acceptor=identity("ap-south-1"))
    d.start()
    _, a_events = pump(d, a)
    assert [e.code for e in a_events if isinstance(e, Closed)] == ["unknown_node"]


def test_messages_flow_after_the_handshake_and_pings_measure_rtt() -> None:
    d, a = opened_pair()
    update = m.Update(7, "notes", 1, ("eu-west-1",), b"\x00\x00")
    d.send(update)
    _, a_events = pump(d, a)
    assert a_events == [Received(update)]
    d.ping()
    d_events, _ = pump(d, a)
    assert len(d_events) == 1 and isinstance(d_events[0], RoundTrip)
    assert d_events[0].seconds > 0


def test_sending_before_the_handshake_is_an_error() -> None:
    d, _ = pair()
    with pytest.raises(m.ProtocolError):
        d.send(m.Ack((1,)))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff",  # unknown type (also what a text frame becomes)
        b"\x63",  # unknown type 99
        b"\x01MRDX\x01\x01",  # bad magic
        b"\x01MRDN\x01",  # truncated hello
        b"\x01MRDN" + b"\x01\x01" + b"\xff\xff\xff\xff\x0f" + b"x",  # huge declared length
        bytes(random.Random(1).randbytes(64)),
    ],
)
def test_garbage_before_the_handshake_closes_with_protocol_error(frame: bytes) -> None:
    _, a = pair()
    a.receive_data(frame)
    events = a.events_received()
    assert a.state is State.CLOSED
    assert [type(e) for e in events] == [Closed]
    assert events[0].code == "protocol_error"  # type: ignore[union-attr]
    refusal = m.decode(a.data_to_send()[0])
    assert isinstance(refusal, m.Refuse) and refusal.code == "protocol_error"


def test_hostile_frames_after_the_handshake_close_the_link_with_a_reason() -> None:
    rng = random.Random(7)
    for _ in range(200):
        _, a = opened_pair()
        good = m.encode(m.Update(1, "doc", 1, ("x",), b"\x00\x00"))
        choice = rng.randrange(4)
        if choice == 0:
            frame = good[: rng.randrange(len(good))]  # truncated
        elif choice == 1:
            frame = rng.randbytes(rng.randrange(1, 40))
        elif choice == 2:
            frame = good + b"\x00"  # trailing bytes
        else:
            frame = m.encode(m.Hello(1, 1, "test", "x", "y", "z", b"\x00" * 32))  # replayed hello
        a.receive_data(frame)
        events = a.events_received()
        if a.state is State.OPEN:
            # A random frame can happen to be a valid message; it is then just a message.
            assert all(isinstance(e, Received) for e in events)
            continue
        assert [type(e) for e in events] == [Closed]


def test_every_message_round_trips() -> None:
    samples: list[m.Message] = [
        m.Hello(1, 2, "c", "n", "r", "s", b"\x01" * 32),
        m.Welcome(1, "n", "r", "s", b"\x02" * 32, b"\x03" * 32),
        m.Auth(b"\x04" * 32),
        m.Refuse("code", "reason é"),
        m.Ready(),
        m.Ping(123),
        m.Pong(2**50),
        m.Update(1, "a.b:c-d_e", 3, ("n1", "n2"), b"\x00\x00"),
        m.Tombstone(2, "doc", 4, ()),
        m.Ack((1, 2, 3)),
        m.Reject(5, "invalid_update", "bad"),
        m.ChangesRequest(1, 0, 500),
        m.Changes(
            1,
            (m.ChangeEntry("d", 1, False, b"\x05" * 16), m.ChangeEntry("e", 2, True, b"")),
            9,
            True,
        ),
        m.SyncStep1(2, "d", b"\x00"),
        m.SyncStep2(2, "d", 1, False, b"\x00\x00"),
        m.Failure(3, "not_found", "no"),
        m.CaughtUp(10),
        m.Awareness("d", b"\x00"),
        m.Placements((b'{"doc_id":"d"}', b"")),
        m.CatalogRequest(4, 7, 500),
        m.CatalogPage(4, (b"{}",), 12, False),
        m.Members(b'{"members":[]}'),
    ]
    assert {type(s) for s in samples} == set(m.MESSAGES.values())
    for sample in samples:
        assert m.decode(m.encode(sample)) == sample


@pytest.mark.parametrize(
    "frame",
    [
        m.encode(m.Update(1, "ok", 1, (), b"")).replace(b"ok", b"!!"),  # invalid document id
        b"\x16\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # ack count far past the frame
        m.encode(m.Refuse("x" * 200, "r")),  # a name past 128 bytes
        m.encode(m.Changes(1, (m.ChangeEntry("d", 1, False, b"\x01" * 15),), 1, False)),
    ],
)
def test_decode_refuses_out_of_bounds_values(frame: bytes) -> None:
    with pytest.raises(m.ProtocolError):
        m.decode(frame)


def test_outbox_bounds_memory_and_requeues_in_flight_deltas() -> None:
    acked: list[str] = []
    box = Outbox(max_bytes=1000, max_in_flight=2)
    for i in range(20):
        box.push(Delta(f"d{i}", 1, b"x" * 100, (), float(i), acked.append))
    stats = box.statistics()
    assert stats.queued_bytes <= 1000 and stats.dropped > 0
    assert box.overflow_since == 0.0  # the oldest dropped change
    first = list(box.take(0.0))
    assert len(first) == 2 and not box.ready
    box.acked((first[0].seq,), "peer")
    assert acked == ["peer"] and box.ready
    box.link_lost()  # the unacknowledged one goes back first
    again = list(box.take(1.0))
    assert again[0].doc_id == first[1].doc_id
    box.caught_up(as_of=5.0)
    assert box.overflow_since is None


def test_placement_records_are_bounded() -> None:
    too_many = m.encode(m.Placements(tuple(b"x" for _ in range(m.MAX_RECORDS + 1))))
    with pytest.raises(m.ProtocolError, match="placement records"):
        m.decode(too_many)
    too_big = m.encode(m.CatalogPage(1, (b"x" * (m.MAX_RECORD + 1),), 1, False))
    with pytest.raises(m.ProtocolError, match="placement record of"):
        m.decode(too_big)
