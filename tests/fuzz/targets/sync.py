"""y-websocket frames from a client, through :func:`app.sync.protocol.decode`
(SyncProtocolError), then what :mod:`app.sync.endpoints` does with each message: a sync step 1
answers with ``encode_state`` (InvalidUpdate), an update applies (CrdtError), an awareness
update decodes (AwarenessError)."""

from __future__ import annotations

import contextlib

from app.sync import protocol as sync
from app.sync.awareness import AwarenessError, decode_update
from crdt import CrdtError, InvalidUpdate

from ._seeds import STATE_VECTOR, UPDATES, open_document


def seeds() -> list[bytes]:
    return [
        sync.encode_sync_step1(b"\x00"),
        sync.encode_sync_step1(STATE_VECTOR),
        sync.encode_sync_step2(UPDATES[-1]),
        sync.encode_update(UPDATES[0]),
        sync.encode_awareness(b'\x01\x05\x01\x0d{"user":"a"}'),
        b"\x03",  # query awareness
    ]


def test_one_input(data: bytes) -> None:
    try:
        message = sync.decode(data)
    except sync.SyncProtocolError:
        return
    if isinstance(message, sync.SyncStep1):
        with open_document() as doc, contextlib.suppress(InvalidUpdate):
            doc.encode_state(message.state_vector)
    elif isinstance(message, sync.SyncStep2 | sync.SyncUpdate):
        with open_document() as doc:
            try:
                doc.apply_update(message.update)
            except CrdtError:
                return
            doc.to_json()
    elif isinstance(message, sync.AwarenessMessage):
        try:
            decode_update(message.update)
        except AwarenessError:
            return
