"""Awareness updates (clients' presence) through :class:`app.sync.awareness.Awareness`, the
state machine the hub keeps per document: ``apply`` raises AwarenessError or applies; what it
relays (``apply``'s result, ``remove_owner``, ``encode_all``) decodes again, since other
clients and peers receive it.

The input is a sequence of steps: one byte names the step (apply an update from one of three
connections, a connection closes, time passes), then its arguments."""

from __future__ import annotations

import contextlib

from app.sync.awareness import Awareness, AwarenessError, decode_update, encode_update

from .._input import Input

_OWNERS = ("client-a", "client-b", "peer-1")


def seeds() -> list[bytes]:
    updates = [
        encode_update([(5, 1, '{"user":"a"}')]),
        encode_update([(5, 2, "null"), (6, 1, '{"cursor":[1,2]}')]),
        encode_update([(2**53 - 2, 3, "{}")]),
    ]
    return [
        b"".join(bytes([0, len(u) >> 8, len(u) & 0xFF]) + u for u in updates),
        bytes([0, 0, len(updates[0])]) + updates[0] + b"\x03\x04\x05",
    ]


def test_one_input(data: bytes) -> None:
    source = Input(data)
    now = [0.0]
    awareness = Awareness(clock=lambda: now[0])
    while source:
        step = source.byte()
        owner = _OWNERS[step % 3]
        if step % 8 < 3:
            with contextlib.suppress(AwarenessError):
                _relayed(awareness.apply(source.chunk(), owner))
        elif step % 8 < 5:
            _relayed(awareness.remove_owner(owner))
        elif step % 8 < 7:
            now[0] += source.byte()
            awareness.expire()
        else:
            _relayed(awareness.encode_all())
        len(awareness)


def _relayed(update: bytes | None) -> None:
    """What the state machine passes on must be an awareness update its receivers accept."""
    if update is None:
        return
    try:
        decode_update(update)
    except AwarenessError as exc:
        raise AssertionError(f"relayed an update its receivers refuse: {exc}") from exc
