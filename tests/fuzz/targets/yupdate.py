"""Yjs v1 updates, as a client (POST /v1/docs/{id}/update, y-websocket) or a peer sends them:
:func:`crdt.yupdate.parse_update` refuses them with DecodeError or parses them, and a document
applies them or refuses them with a CrdtError (a Yrs panic included); an applied update leaves
a document that still renders and digests."""

from __future__ import annotations

import contextlib

from crdt import CrdtError
from crdt.lib0 import DecodeError
from crdt.yupdate import parse_update

from ._seeds import UPDATES, open_document

#: Known bugs let pass while fuzzing: none. (An update that made Yrs spin forever — a client
#: twice, an item next to itself — was skipped here until parse_update refused it; its file,
#: crashes/yupdate/timeout-b9d76322..., stays as a regression test.)
TOLERATED: tuple[type[Exception], ...] = ()


def seeds() -> list[bytes]:
    return [*UPDATES, b"\x00\x00"]


def test_one_input(data: bytes) -> None:
    try:
        _apply(data)
    except TOLERATED:
        return


def _apply(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_update(data, collect_items=True)
    with open_document() as doc:
        try:
            doc.apply_update(data)
        except CrdtError:
            return
        doc.to_json()
        doc.digest()
        doc.encode_state(doc.state_vector())
