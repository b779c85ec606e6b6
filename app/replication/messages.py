"""The peer wire format: one message per WebSocket binary frame.

A frame is a message type (lib0 var uint) followed by the message's fields, each encoded with
lib0 (https://github.com/dmonad/lib0/blob/main/encoding.js): unsigned integers as var uints,
strings and byte strings with a var uint length, lists with a var uint count. Every declared
length is checked against the bytes that remain before anything is allocated, strings that
name things are bounded, document ids are validated, and trailing bytes are refused: a frame
either decodes completely or raises :class:`ProtocolError`.

The :class:`Hello` layout (type 1, ``b"MRDN"``, lowest and highest protocol version) stays
the same in every protocol version, so any two versions can at least tell each other why they
cannot talk. Message types (protocol version 1)::

    1 Hello      2 Welcome    3 Auth       4 Refuse     5 Ready
    10 Ping      11 Pong
    20 Update    21 Tombstone 22 Ack       23 Reject
    30 ChangesRequest  31 Changes  32 SyncStep1  33 SyncStep2  34 Failure  35 Caught up

Protocol version 2 adds::

    40 Awareness (y-protocols awareness update of a document's clients, relayed, not stored)

Protocol version 3 adds placement (records are opaque bytes here, JSON made by
:mod:`app.cluster.catalog`)::

    50 Placements (records changed at the sender)
    51 CatalogRequest  52 CatalogPage (the sender's catalog feed, for anti-entropy)

Protocol version 5 adds membership (the list is JSON made by :mod:`app.cluster.membership`)::

    60 Members (the sender's whole member list, on link open and after each change)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from crdt import DOCUMENT_ID
from crdt.lib0 import DecodeError, Decoder, Encoder

__all__ = [
    "MAGIC",
    "MESSAGES",
    "Ack",
    "Auth",
    "Awareness",
    "CatalogPage",
    "CatalogRequest",
    "CaughtUp",
    "ChangeEntry",
    "Changes",
    "ChangesRequest",
    "Failure",
    "Hello",
    "Members",
    "Message",
    "Ping",
    "Placements",
    "Pong",
    "ProtocolError",
    "Ready",
    "Refuse",
    "Reject",
    "SyncStep1",
    "SyncStep2",
    "Tombstone",
    "Update",
    "Welcome",
    "decode",
    "encode",
]

MAGIC = b"MRDN"
NONCE_BYTES = 32
PROOF_BYTES = 32
#: Longest name (cluster, node, region, storage id, error code) in bytes.
MAX_NAME = 128
#: Longest human-readable reason in bytes.
MAX_REASON = 1024
#: Most node ids a delta may list as already reached.
MAX_REACHED = 64
#: Largest placement record in bytes (crdt.catalog.MAX_RECORD_BYTES), and most per message.
MAX_RECORD = 64 * 1024
MAX_RECORDS = 1000
#: Largest member list in bytes (4,096 entries of about 200 bytes, with room to spare).
MAX_MEMBERS_BYTES = 2 * 1024 * 1024


class ProtocolError(ValueError):
    """A frame that does not decode, or a message not allowed in the link's state."""


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """One document of a changes feed page: where the sender's copy stands."""

    doc_id: str
    incarnation: int
    deleted: bool
    #: The sender copy's Document.summary() (empty for a tombstone): equal summaries, no sync.
    summary: bytes


# Field kinds: how each field is encoded (see _write / _read).
(
    _UINT,
    _BOOL,
    _NAME,
    _REASON,
    _DOC,
    _BYTES,
    _NONCE,
    _PROOF,
    _NAMES,
    _UINTS,
    _ENTRIES,
    _RECORDS,
    _MEMBERS,
) = range(13)


class Message:
    """Base of every message; ``TYPE`` is its wire type, ``FIELDS`` its field kinds."""

    __slots__ = ()
    TYPE: ClassVar[int]
    FIELDS: ClassVar[tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Dialer → acceptor, first frame: who I am, which protocol versions I speak, a nonce."""

    TYPE = 1
    FIELDS = (_UINT, _UINT, _NAME, _NAME, _NAME, _NAME, _NONCE)
    min_version: int
    max_version: int
    cluster: str
    node: str
    region: str
    storage_id: str
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """Acceptor → dialer: the version chosen, who I am, my nonce, and proof that I know the
    cluster secret (see :mod:`app.replication.protocol`)."""

    TYPE = 2
    FIELDS = (_UINT, _NAME, _NAME, _NAME, _NONCE, _PROOF)
    version: int
    node: str
    region: str
    storage_id: str
    nonce: bytes
    proof: bytes


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Dialer → acceptor: the dialer's proof that it knows the cluster secret."""

    TYPE = 3
    FIELDS = (_PROOF,)
    proof: bytes


@dataclass(frozen=True, slots=True)
class Refuse(Message):
    """Either side: why the link is refused or closed; the connection closes after it."""

    TYPE = 4
    FIELDS = (_NAME, _REASON)
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ready(Message):
    """Acceptor → dialer: authenticated; the link is open."""

    TYPE = 5
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class Ping(Message):
    TYPE = 10
    FIELDS = (_UINT,)
    stamp: int


@dataclass(frozen=True, slots=True)
class Pong(Message):
    TYPE = 11
    FIELDS = (_UINT,)
    stamp: int


@dataclass(frozen=True, slots=True)
class Update(Message):
    """A committed Yjs update of ``incarnation``; ``reached`` lists nodes known to have been
    sent it (a receiver relays only to the others). Answered with Ack or Reject of ``seq``."""

    TYPE = 20
    FIELDS = (_UINT, _DOC, _UINT, _NAMES, _BYTES)
    seq: int
    doc_id: str
    incarnation: int
    reached: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Tombstone(Message):
    """A committed deletion of ``incarnation``; answered like Update."""

    TYPE = 21
    FIELDS = (_UINT, _DOC, _UINT, _NAMES)
    seq: int
    doc_id: str
    incarnation: int
    reached: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """These deltas are committed (or superseded) at the receiver."""

    TYPE = 22
    FIELDS = (_UINTS,)
    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Reject(Message):
    """The receiver refused delta ``seq`` (invalid, too large, storage failure)."""

    TYPE = 23
    FIELDS = (_UINT, _NAME, _REASON)
    seq: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChangesRequest(Message):
    """Anti-entropy: the documents of your changes feed after ``since``, ``limit`` at most."""

    TYPE = 30
    FIELDS = (_UINT, _UINT, _UINT)
    request: int
    since: int
    limit: int


@dataclass(frozen=True, slots=True)
class Changes(Message):
    """A page of the changes feed; ``last_seq`` is where the next page starts."""

    TYPE = 31
    FIELDS = (_UINT, _ENTRIES, _UINT, _BOOL)
    request: int
    entries: tuple[ChangeEntry, ...]
    last_seq: int
    more: bool


@dataclass(frozen=True, slots=True)
class SyncStep1(Message):
    """Yjs sync step 1 for one document: my state vector; send what I lack."""

    TYPE = 32
    FIELDS = (_UINT, _DOC, _BYTES)
    request: int
    doc_id: str
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2(Message):
    """Yjs sync step 2: the update the asker lacks, of ``incarnation`` (empty when deleted)."""

    TYPE = 33
    FIELDS = (_UINT, _DOC, _UINT, _BOOL, _BYTES)
    request: int
    doc_id: str
    incarnation: int
    deleted: bool
    update: bytes


@dataclass(frozen=True, slots=True)
class Failure(Message):
    """A request (ChangesRequest, SyncStep1) could not be answered."""

    TYPE = 34
    FIELDS = (_UINT, _NAME, _REASON)
    request: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class CaughtUp(Message):
    """Anti-entropy: I integrated your changes feed up to ``seq`` (your lag can be cleared)."""

    TYPE = 35
    FIELDS = (_UINT,)
    seq: int


@dataclass(frozen=True, slots=True)
class Awareness(Message):
    """Awareness states of a document's clients (protocol version 2 and later)."""

    TYPE = 40
    FIELDS = (_DOC, _BYTES)
    doc_id: str
    update: bytes


@dataclass(frozen=True, slots=True)
class Placements(Message):
    """Placement records that changed at the sender (protocol version 3 and later)."""

    TYPE = 50
    FIELDS = (_RECORDS,)
    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CatalogRequest(Message):
    """Anti-entropy of placement: the records of your catalog feed after ``since``."""

    TYPE = 51
    FIELDS = (_UINT, _UINT, _UINT)
    request: int
    since: int
    limit: int


@dataclass(frozen=True, slots=True)
class CatalogPage(Message):
    """A page of the catalog feed; ``last_seq`` is where the next page starts."""

    TYPE = 52
    FIELDS = (_UINT, _RECORDS, _UINT, _BOOL)
    request: int
    records: tuple[bytes, ...]
    last_seq: int
    more: bool


@dataclass(frozen=True, slots=True)
class Members(Message):
    """The sender's member list (protocol version 5 and later)."""

    TYPE = 60
    FIELDS = (_MEMBERS,)
    members: bytes


MESSAGES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Auth,
        Refuse,
        Ready,
        Ping,
        Pong,
        Update,
        Tombstone,
        Ack,
        Reject,
        ChangesRequest,
        Changes,
        SyncStep1,
        SyncStep2,
        Failure,
        CaughtUp,
        Awareness,
        Placements,
        CatalogRequest,
        CatalogPage,
        Members,
    )
}


def encode(message: Message) -> bytes:
    enc = Encoder()
    enc.write_var_uint(message.TYPE)
    if isinstance(message, Hello):
        enc.write_bytes(MAGIC)  # the fixed prefix of every protocol version
    for kind, f in zip(message.FIELDS, fields(message), strict=True):  # type: ignore[arg-type]
        _write(enc, kind, getattr(message, f.name))
    return enc.to_bytes()


def decode(frame: bytes) -> Message:
    """Decodes one frame; raises :class:`ProtocolError` with the reason."""
    dec = Decoder(frame)
    try:
        kind = dec.read_var_uint()
        cls = MESSAGES.get(kind)
        if cls is None:
            raise ProtocolError(f"unknown message type {kind}")
        if cls is Hello and dec.read_bytes(len(MAGIC)) != MAGIC:
            raise ProtocolError("not a Meridian peer (bad magic)")
        values = [_read(dec, field_kind) for field_kind in cls.FIELDS]
        if not dec.at_end():
            raise ProtocolError(f"{dec.remaining} unexpected bytes after {cls.__name__}")
    except DecodeError as exc:
        raise ProtocolError(f"malformed frame: {exc}") from None
    return cls(*values)


def _write(enc: Encoder, kind: int, value: Any) -> None:
    if kind == _UINT:
        enc.write_var_uint(value)
    elif kind == _BOOL:
        enc.write_uint8(1 if value else 0)
    elif kind in (_NAME, _REASON, _DOC):
        enc.write_var_string(value)
    elif kind in (_BYTES, _NONCE, _PROOF, _MEMBERS):
        enc.write_var_bytes(value)
    elif kind == _NAMES:
        enc.write_var_uint(len(value))
        for name in value:
            enc.write_var_string(name)
    elif kind == _UINTS:
        enc.write_var_uint(len(value))
        for number in value:
            enc.write_var_uint(number)
    elif kind == _ENTRIES:
        enc.write_var_uint(len(value))
        for entry in value:
            enc.write_var_string(entry.doc_id)
            enc.write_var_uint(entry.incarnation)
            enc.write_uint8(1 if entry.deleted else 0)
            enc.write_var_bytes(entry.summary)
    elif kind == _RECORDS:
        enc.write_var_uint(len(value))
        for record in value:
            enc.write_var_bytes(record)


def _read(dec: Decoder, kind: int) -> Any:
    if kind == _UINT:
        return dec.read_var_uint()
    if kind == _BOOL:
        flag = dec.read_uint8()
        if flag > 1:
            raise DecodeError(f"boolean byte {flag} at byte {dec.pos - 1}")
        return flag == 1
    if kind == _NAME:
        return _bounded_string(dec, MAX_NAME, "name")
    if kind == _REASON:
        return _bounded_string(dec, MAX_REASON, "reason")
    if kind == _DOC:
        return _doc_id(dec)
    if kind == _BYTES:
        return dec.read_var_bytes()
    if kind == _MEMBERS:
        value = dec.read_var_bytes()
        if len(value) > MAX_MEMBERS_BYTES:
            raise DecodeError(f"a member list of {len(value)} bytes, at most {MAX_MEMBERS_BYTES}")
        return value
    if kind in (_NONCE, _PROOF):
        value = dec.read_var_bytes()
        if len(value) != NONCE_BYTES:
            raise DecodeError(f"expected {NONCE_BYTES} bytes of nonce or proof, got {len(value)}")
        return value
    if kind == _NAMES:
        count = dec.read_length("names", 1)
        if count > MAX_REACHED:
            raise DecodeError(f"{count} node names, at most {MAX_REACHED}")
        return tuple(_bounded_string(dec, MAX_NAME, "name") for _ in range(count))
    if kind == _UINTS:
        count = dec.read_length("numbers", 1)
        return tuple(dec.read_var_uint() for _ in range(count))
    if kind == _ENTRIES:
        count = dec.read_length("entries", 5)
        return tuple(
            ChangeEntry(_doc_id(dec), dec.read_var_uint(), _read(dec, _BOOL), _summary(dec))
            for _ in range(count)
        )
    if kind == _RECORDS:
        count = dec.read_length("records", 1)
        if count > MAX_RECORDS:
            raise DecodeError(f"{count} placement records, at most {MAX_RECORDS}")
        records = []
        for _ in range(count):
            record = dec.read_var_bytes()
            if len(record) > MAX_RECORD:
                raise DecodeError(
                    f"a placement record of {len(record)} bytes, at most {MAX_RECORD}"
                )
            records.append(record)
        return tuple(records)
    raise AssertionError(kind)


def _bounded_string(dec: Decoder, limit: int, what: str) -> str:
    length = dec.read_var_uint()
    if length > limit:
        raise DecodeError(f"{what} of {length} bytes, at most {limit}")
    raw = dec.read_bytes(length)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"invalid UTF-8 in a {what}") from None


def _summary(dec: Decoder) -> bytes:
    summary = dec.read_var_bytes()
    if len(summary) not in (0, 16):
        raise DecodeError(f"a document summary is 0 or 16 bytes, got {len(summary)}")
    return summary


def _doc_id(dec: Decoder) -> str:
    doc_id = _bounded_string(dec, MAX_NAME, "document id")
    if not DOCUMENT_ID.fullmatch(doc_id):
        raise DecodeError(f"invalid document id {doc_id[:40]!r}")
    return doc_id
