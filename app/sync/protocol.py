"""The y-websocket protocol (https://github.com/yjs/y-websocket, y-protocols) without I/O.

One message per WebSocket binary frame (y-websocket 3.x clients decode only the first message
of a frame). A frame is a lib0 var uint message type, then its payload::

    0 sync        var uint sub-type, var bytes: 0 step 1 (a state vector),
                  1 step 2 (an update), 2 update
    1 awareness   var bytes: an awareness update (see :mod:`app.sync.awareness`)
    2 auth        var uint 0 (permission denied), var string reason
    3 query awareness

:func:`decode` turns a client's frame into one of the message classes below, or raises
:class:`SyncProtocolError`; ``encode_*`` build the server's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt.lib0 import DecodeError, Decoder, Encoder

__all__ = [
    "AwarenessMessage",
    "QueryAwareness",
    "SyncMessage",
    "SyncProtocolError",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "decode",
    "encode_awareness",
    "encode_permission_denied",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
]

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3

STEP1 = 0
STEP2 = 1
UPDATE = 2


class SyncProtocolError(ValueError):
    """A frame that is not a y-websocket message a client may send."""


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    update: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


SyncMessage = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness


def decode(frame: bytes) -> SyncMessage:
    """Decodes a client's frame; raises SyncProtocolError naming the problem."""
    dec = Decoder(frame)
    try:
        kind = dec.read_var_uint()
        message: SyncMessage
        if kind == MESSAGE_SYNC:
            sub = dec.read_var_uint()
            payload = dec.read_var_bytes()
            if sub == STEP1:
                message = SyncStep1(payload)
            elif sub == STEP2:
                message = SyncStep2(payload)
            elif sub == UPDATE:
                message = SyncUpdate(payload)
            else:
                raise SyncProtocolError(f"unknown sync message type {sub}")
        elif kind == MESSAGE_AWARENESS:
            message = AwarenessMessage(dec.read_var_bytes())
        elif kind == MESSAGE_QUERY_AWARENESS:
            message = QueryAwareness()
        elif kind == MESSAGE_AUTH:
            raise SyncProtocolError("auth messages are sent by the server, not by clients")
        else:
            raise SyncProtocolError(f"unknown message type {kind}")
    except DecodeError as exc:
        raise SyncProtocolError(f"malformed message: {exc}") from None
    if not dec.at_end():
        raise SyncProtocolError(f"{dec.remaining} bytes after the message (one per frame)")
    return message


def _sync(sub: int, payload: bytes) -> bytes:
    enc = Encoder()
    enc.write_var_uint(MESSAGE_SYNC)
    enc.write_var_uint(sub)
    enc.write_var_bytes(payload)
    return enc.to_bytes()


def encode_sync_step1(state_vector: bytes) -> bytes:
    return _sync(STEP1, state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return _sync(STEP2, update)


def encode_update(update: bytes) -> bytes:
    return _sync(UPDATE, update)


def encode_awareness(update: bytes) -> bytes:
    enc = Encoder()
    enc.write_var_uint(MESSAGE_AWARENESS)
    enc.write_var_bytes(update)
    return enc.to_bytes()


def encode_permission_denied(reason: str) -> bytes:
    enc = Encoder()
    enc.write_var_uint(MESSAGE_AUTH)
    enc.write_var_uint(0)
    enc.write_var_string(reason)
    return enc.to_bytes()
