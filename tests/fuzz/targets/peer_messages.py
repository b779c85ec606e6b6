"""Peer protocol frames (one message per WebSocket frame, :mod:`app.replication.messages`):
``decode`` raises ProtocolError or returns a message, and that message encodes to a frame that
decodes to it again (what a node relays is what it received)."""

from __future__ import annotations

from app.replication import messages as m

from ._seeds import STATE_VECTOR, UPDATES

_NONCE = bytes(range(32))
_SUMMARY = bytes(range(16))
_RECORD = b'{"id":"doc","regions":["eu-west"]}'

#: One of each message type.
MESSAGES: list[m.Message] = [
    m.Hello(1, 5, "meridian", "eu-west-1", "eu-west", "s-1", _NONCE),
    m.Welcome(5, "us-east-1", "us-east", "s-2", _NONCE, _NONCE),
    m.Auth(_NONCE),
    m.Refuse("wrong_cluster", "this node is in cluster 'a'"),
    m.Ready(),
    m.Ping(1_000_000),
    m.Pong(1_000_000),
    m.Update(3, "doc", 1, ("n1", "n2"), UPDATES[0]),
    m.Tombstone(4, "notes:1", 2, ("n1",)),
    m.Ack((1, 2, 300)),
    m.Reject(5, "invalid_update", "no"),
    m.ChangesRequest(1, 0, 100),
    m.Changes(
        1, (m.ChangeEntry("doc", 1, False, _SUMMARY), m.ChangeEntry("d", 2, True, b"")), 9, True
    ),
    m.SyncStep1(1, "doc", STATE_VECTOR),
    m.SyncStep2(1, "doc", 1, False, UPDATES[-1]),
    m.Failure(2, "not_found", "no"),
    m.CaughtUp(9),
    m.Awareness("doc", b"\x01\x05\x01\x02{}"),
    m.Placements((_RECORD, _RECORD)),
    m.CatalogRequest(1, 0, 50),
    m.CatalogPage(1, (_RECORD,), 7, False),
    m.Members(b'[{"node":"eu-west-1"}]'),
]


def seeds() -> list[bytes]:
    return [m.encode(message) for message in MESSAGES]


def test_one_input(data: bytes) -> None:
    try:
        message = m.decode(data)
    except m.ProtocolError:
        return
    again = m.decode(m.encode(message))
    if again != message:
        raise AssertionError(f"{message!r} re-decodes as {again!r}")
