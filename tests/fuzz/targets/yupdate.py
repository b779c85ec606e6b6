"""Yjs v1 updates, as a client (POST /v1/docs/{id}/update, y-websocket) or a peer sends them:
:func:`crdt.yupdate.parse_update` refuses them with DecodeError or parses them, and a document
applies them or refuses them with a CrdtError (a Yrs panic included); an applied update leaves
a document that still renders and digests."""

from __future__ import annotations

import itertools

from crdt import CrdtError
from crdt.lib0 import DecodeError
from crdt.yupdate import ParsedUpdate, parse_update

from ._seeds import UPDATES, open_document


class KnownHang(Exception):
    """An update of the shape that makes Yrs' apply_update spin forever (found by this
    target: crashes/yupdate/timeout-b9d76322..., reported in docs/fuzzing.md): an item whose
    origin or right origin lies inside its own id range, in an update where two items claim
    the same ids. Skipped while fuzzing, since no timeout can stop native code."""


class DigestRefused(Exception):
    """``Document.digest()`` raised DecodeError on a document that had accepted the update
    (found by this target: crashes/yupdate/crash-04a6517c..., reported in docs/fuzzing.md)."""


#: Known, reported bugs let pass while fuzzing, so that a run looks past them;
#: tests/test_fuzz_atheris.py replays their crash files without this (expected failures).
TOLERATED: tuple[type[Exception], ...] = (KnownHang, DigestRefused)


def seeds() -> list[bytes]:
    return [*UPDATES, b"\x00\x00"]


def test_one_input(data: bytes) -> None:
    try:
        _apply(data)
    except TOLERATED:
        return


def _apply(data: bytes) -> None:
    try:
        parsed = parse_update(data, collect_items=True)
    except DecodeError:
        pass
    else:
        if KnownHang in TOLERATED and _hang_shape(parsed):
            raise KnownHang
    with open_document() as doc:
        try:
            doc.apply_update(data)
        except CrdtError:
            return
        doc.to_json()
        try:
            doc.digest()
        except DecodeError as exc:
            if DigestRefused not in TOLERATED:
                raise
            raise DigestRefused from exc
        doc.encode_state(doc.state_vector())


def _hang_shape(parsed: ParsedUpdate) -> bool:
    items = sorted(parsed.items, key=lambda item: (item.client, item.clock))
    overlap = any(
        a.client == b.client and b.clock < a.clock + a.length for a, b in itertools.pairwise(items)
    )
    inside = any(
        ref is not None
        and ref[0] == item.client
        and item.clock <= ref[1] < item.clock + item.length
        for item in items
        for ref in (item.origin, item.right)
    )
    return overlap and inside
