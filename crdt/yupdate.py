"""Structural reading of Yjs v1 updates: validation before Yrs sees the bytes, and root types.

The format (https://github.com/yjs/yjs/blob/main/src/utils/encoding.js, ``writeStructs`` and
``writeDeleteSet`` with ``UpdateEncoderV1``)::

    update      = clients:varUint { structs:varUint client:varUint clock:varUint struct* } deleteSet
    struct      = info:uint8 ( GC len | Skip len | Item )
    Item        = [origin:ID] [rightOrigin:ID] [parent (if neither origin)] content
    parent      = isKey:varUint ( key:varString | ID ) [parentSub:varString if info & 0x20]
    deleteSet   = clients:varUint { client:varUint ranges:varUint { clock:varUint len:varUint } }

:func:`parse_update` walks every field with bounded reads (see :mod:`crdt.lib0`), so truncated,
random and hostile input ("2**50 structs follow") is refused before Yrs could misbehave on it.

Root types are not in the encoding: a client calls ``doc.getMap("settings")`` and nothing says
"map" on the wire. They are inferred from the items whose parent is the root (directly, or
through their origins): an entry with a key means a map; strings, formats and embeds mean text;
XML nodes mean an XML fragment; other values mean an array. See :func:`infer_root_kinds`.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from enum import StrEnum

from .lib0 import DecodeError, Decoder, Encoder
from .nesting import MAX_NESTING, NestingIndex, Placed, resolve_depths

__all__ = [
    "canonical_delete_set",
    "ParsedUpdate",
    "RootKind",
    "canonical_update",
    "classify",
    "infer_root_kinds",
    "parse_update",
]

# Yjs type references (ContentType), https://github.com/yjs/yjs/blob/main/src/structs/ContentType.js
_TYPE_ARRAY, _TYPE_MAP, _TYPE_TEXT = 0, 1, 2
_TYPE_XML_ELEMENT, _TYPE_XML_FRAGMENT, _TYPE_XML_HOOK, _TYPE_XML_TEXT = 3, 4, 5, 6

# Clocks are 32-bit in Yrs; a range that overflows them is hostile.
_MAX_CLOCK = 2**32 - 1


class RootKind(StrEnum):
    """What a root's content shows it to be."""

    MAP = "map"
    ARRAY = "array"
    TEXT = "text"
    XML = "xml"


# Evidence carried by one item about the type of its parent.
_EVIDENCE_MAP = "map"  # it has a key (parentSub)
_EVIDENCE_TEXT = "text"  # string, format or embed
_EVIDENCE_XML = "xml"  # an XML element, text node or hook
_EVIDENCE_ARRAY = "array"  # any other value
_EVIDENCE_NONE = ""  # deleted content: says nothing


@dataclass(slots=True)
class _Item:
    client: int
    clock: int
    length: int
    origin: tuple[int, int] | None
    right: tuple[int, int] | None
    parent_key: str | None
    has_parent_id: bool
    evidence: str


@dataclass(slots=True)
class ParsedUpdate:
    """What :func:`parse_update` learnt about an update."""

    #: Number of structs (items, GC and skip ranges).
    structs: int = 0
    #: Number of deleted ranges in the delete set.
    deletes: int = 0
    #: Root name -> evidence about its type, from items that name the root explicitly.
    root_evidence: dict[str, set[str]] = field(default_factory=dict)
    #: Every item, when asked for (``collect_items=True``); used by :func:`infer_root_kinds`.
    items: list[_Item] = field(default_factory=list)
    #: Client -> the clock just past its last struct or deleted range here. A copy whose state
    #: vector is below one of these cannot integrate all of the update yet.
    reach: dict[int, int] = field(default_factory=dict)
    #: Every item below a root with its depth (see :mod:`crdt.nesting`).
    nested: list[tuple[Placed, int]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self.structs == 0 and self.deletes == 0


def _read_id(dec: Decoder) -> tuple[int, int]:
    return dec.read_var_uint(), dec.read_var_uint()


_Edits = list[tuple[int, int, bytes]] | None


def _json_string(dec: Decoder, edits: _Edits) -> None:
    """Reads a string of JSON; with ``edits``, records its canonical form."""
    start = dec.pos
    text = dec.read_var_string()
    if edits is not None:
        try:
            value = json.loads(text)
        except ValueError:
            return
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        enc = Encoder()
        enc.write_var_string(canonical)
        edits.append((start, dec.pos, enc.to_bytes()))


def _any(dec: Decoder, edits: _Edits) -> None:
    """Reads an ``any`` value; with ``edits``, records it with object keys sorted."""
    start = dec.pos
    dec.read_any()
    if edits is not None:
        canonical = _canonical_any(Decoder(dec.data, start))
        if canonical != dec.data[start : dec.pos]:
            edits.append((start, dec.pos, canonical))


def _canonical_any(dec: Decoder) -> bytes:
    start = dec.pos
    tag = dec.data[start]
    if tag not in (117, 118):
        dec.read_any()
        return dec.data[start : dec.pos]
    dec.pos += 1
    count = dec.read_var_uint()
    enc = Encoder()
    enc.write_uint8(tag)
    enc.write_var_uint(count)
    head = enc.to_bytes()
    if tag == 117:
        return head + b"".join(_canonical_any(dec) for _ in range(count))
    entries = []
    for _ in range(count):
        key_start = dec.pos
        key = dec.read_var_string()
        entries.append((key, dec.data[key_start : dec.pos] + _canonical_any(dec)))
    entries.sort(key=lambda entry: entry[0])
    return head + b"".join(raw for _, raw in entries)


def _content_length_and_evidence(dec: Decoder, ref: int, edits: _Edits = None) -> tuple[int, str]:
    """Reads one item's content; returns its clock length and what it says of its parent."""
    if ref == 1:  # ContentDeleted
        return dec.read_var_uint(), _EVIDENCE_NONE
    if ref == 2:  # ContentJSON: strings of JSON
        count = dec.read_length("JSON values")
        for _ in range(count):
            _json_string(dec, edits)
        return count, _EVIDENCE_ARRAY
    if ref == 3:  # ContentBinary
        dec.read_var_bytes()
        return 1, _EVIDENCE_ARRAY
    if ref == 4:  # ContentString: its clock length counts UTF-16 code units
        # Yrs itself writes an empty string where an origin split a surrogate pair; its clock
        # length is then 0. Accept what Yrs writes, or its own state could not be re-read.
        text = dec.read_var_string()
        return len(text.encode("utf-16-le")) // 2, _EVIDENCE_TEXT
    if ref == 5:  # ContentEmbed
        _json_string(dec, edits)
        return 1, _EVIDENCE_TEXT
    if ref == 6:  # ContentFormat
        dec.read_var_string()
        _json_string(dec, edits)
        return 1, _EVIDENCE_TEXT
    if ref == 7:  # ContentType
        type_ref = dec.read_var_uint()
        if type_ref in (_TYPE_XML_ELEMENT, _TYPE_XML_HOOK):
            dec.read_var_string()
        elif type_ref not in (
            _TYPE_ARRAY,
            _TYPE_MAP,
            _TYPE_TEXT,
            _TYPE_XML_FRAGMENT,
            _TYPE_XML_TEXT,
        ):
            raise DecodeError(f"unknown shared type {type_ref}")
        xml = type_ref in (_TYPE_XML_ELEMENT, _TYPE_XML_HOOK, _TYPE_XML_TEXT)
        return 1, _EVIDENCE_XML if xml else _EVIDENCE_ARRAY
    if ref == 8:  # ContentAny
        count = dec.read_length("values")
        for _ in range(count):
            _any(dec, edits)
        return count, _EVIDENCE_ARRAY
    if ref == 9:  # ContentDoc: guid and options
        dec.read_var_string()
        _any(dec, edits)
        return 1, _EVIDENCE_ARRAY
    raise DecodeError(f"unknown content type {ref}")


def parse_update(
    data: bytes,
    *,
    collect_items: bool = False,
    edits: _Edits = None,
    known: NestingIndex | None = None,
    limit: int | None = MAX_NESTING,
) -> ParsedUpdate:
    """Checks that ``data`` is a complete, well-formed Yjs v1 update and summarises it.

    Raises :class:`~crdt.lib0.DecodeError` (a ``ValueError``) naming the first problem, and
    its subclass :class:`~crdt.nesting.NestingTooDeep` when shared types would nest deeper
    than ``limit`` (counting the document's own depths when ``known`` is given; see
    :func:`~crdt.nesting.resolve_depths`; None: no limit).
    Well-formedness is necessary, not sufficient: Yrs may still refuse the update.
    With ``edits``, records the (start, end, bytes) replacements :func:`canonical_update` makes.
    """
    dec = Decoder(data)
    parsed = ParsedUpdate()
    # Where each item hangs, for its nesting depth: Yrs frees nested types recursively, and
    # a hostile chain of many thousand nested maps overflows its stack.
    placed: list[Placed] = []
    clients = dec.read_length("clients", 3)
    seen: set[int] = set()
    for _ in range(clients):
        count = dec.read_length("structs", 2)
        client = dec.read_var_uint()
        clock = dec.read_var_uint()
        # Yjs writes each client's structs once; two runs of one client may claim the same
        # ids, which sends Yrs into an endless loop (found by fuzzing).
        if client in seen:
            raise DecodeError(f"client {client} appears twice in the update")
        seen.add(client)
        for _ in range(count):
            info = dec.read_uint8()
            ref = info & 0x1F
            if ref in (0, 10):  # GC or Skip
                length = dec.read_var_uint()
                if length == 0:
                    raise DecodeError("empty range")
            else:
                origin = _read_id(dec) if info & 0x80 else None
                right = _read_id(dec) if info & 0x40 else None
                parent_key: str | None = None
                has_parent_id = False
                has_sub = False
                if not info & 0xC0:
                    is_key = dec.read_var_uint()
                    if is_key == 1:
                        parent_key = dec.read_var_string()
                    elif is_key == 0:
                        parent_id = _read_id(dec)
                        has_parent_id = True
                    else:
                        raise DecodeError(f"invalid parent info {is_key}")
                    if info & 0x20:
                        dec.read_var_string()
                        has_sub = True
                length, evidence = _content_length_and_evidence(dec, ref, edits)
                for neighbour in (origin, right):
                    # An item cannot sit next to itself: Yrs loops forever integrating one
                    # whose origin lies in its own id range (found by fuzzing).
                    if (
                        neighbour is not None
                        and neighbour[0] == client
                        and clock <= neighbour[1] < clock + length
                    ):
                        raise DecodeError(
                            f"item {client}:{clock} refers to itself as its neighbour"
                        )
                placed.append(
                    Placed(
                        client,
                        clock,
                        length,
                        parent_id if has_parent_id else None,
                        origin or right,
                        parent_key is not None,
                    )
                )
                if has_sub:
                    evidence = _EVIDENCE_MAP
                if parent_key is not None:
                    found = parsed.root_evidence.setdefault(parent_key, set())
                    if evidence:
                        found.add(evidence)
                if collect_items:
                    parsed.items.append(
                        _Item(
                            client,
                            clock,
                            length,
                            origin,
                            right,
                            parent_key,
                            has_parent_id,
                            evidence,
                        )
                    )
            clock += length
            if clock > _MAX_CLOCK:
                raise DecodeError(f"clock of client {client} overflows")
            parsed.structs += 1
        if count and parsed.reach.get(client, 0) < clock:
            parsed.reach[client] = clock
    ds_clients = dec.read_length("delete set clients", 2)
    for _ in range(ds_clients):
        client = dec.read_var_uint()
        ranges = dec.read_length("deleted ranges", 2)
        for _ in range(ranges):
            start = dec.read_var_uint()
            length = dec.read_var_uint()
            if start + length > _MAX_CLOCK:
                raise DecodeError("deleted range overflows the clock")
            if length and parsed.reach.get(client, 0) < start + length:
                parsed.reach[client] = start + length
        parsed.deletes += ranges
    if not dec.at_end():
        raise DecodeError(f"{dec.remaining} unexpected bytes after the update")
    parsed.nested = resolve_depths(placed, known=known, limit=limit)
    return parsed


def canonical_update(data: bytes) -> bytes:
    """The update with every JSON object's keys in sorted order.

    Yrs keeps ``any`` objects in hash maps and writes their keys in an arbitrary order, so two
    copies with identical content can encode differently. This form is the same for identical
    content; digests that prove convergence are taken over it.
    """
    edits: list[tuple[int, int, bytes]] = []
    parse_update(data, edits=edits, limit=None)  # a document accepted earlier still has one
    if not edits:
        return data
    out = bytearray()
    position = 0
    for start, end, replacement in edits:
        out += data[position:start]
        out += replacement
        position = end
    out += data[position:]
    return bytes(out)


def canonical_delete_set(data: bytes) -> bytes | None:
    """The delete set of an update that carries no structs (``get_update`` at the document's
    own state vector), clients sorted and adjacent ranges merged: the same bytes for the same
    deletions however they were recorded. None when the update carries structs."""
    dec = Decoder(data)
    if dec.read_var_uint() != 0:
        return None
    merged: dict[int, list[list[int]]] = {}
    for _ in range(dec.read_length("delete set clients", 2)):
        client = dec.read_var_uint()
        ranges = merged.setdefault(client, [])
        for _ in range(dec.read_length("deleted ranges", 2)):
            start = dec.read_var_uint()
            ranges.append([start, start + dec.read_var_uint()])
    enc = Encoder()
    enc.write_var_uint(len(merged))
    for client in sorted(merged):
        spans: list[list[int]] = []
        for start, end in sorted(merged[client]):
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            elif end > start:
                spans.append([start, end])
        enc.write_var_uint(client)
        enc.write_var_uint(len(spans))
        for start, end in spans:
            enc.write_var_uint(start)
            enc.write_var_uint(end - start)
    return enc.to_bytes()


def classify(evidence: set[str]) -> RootKind | None:
    """The root type that a set of evidence implies, or None when it says nothing.

    Sequence content wins over keys (a root is used as one or the other by real clients);
    among sequences, text wins over XML over plain values.
    """
    if _EVIDENCE_TEXT in evidence:
        return RootKind.TEXT
    if _EVIDENCE_XML in evidence:
        return RootKind.XML
    if _EVIDENCE_ARRAY in evidence:
        return RootKind.ARRAY
    if _EVIDENCE_MAP in evidence:
        return RootKind.MAP
    return None


def infer_root_kinds(state: bytes, nesting: NestingIndex | None = None) -> dict[str, set[str]]:
    """Evidence about every root of a document, given its whole state as an update.

    Unlike :attr:`ParsedUpdate.root_evidence`, this follows origins, so an item inserted next
    to another counts for the other's root: a text whose first character was deleted (its
    content garbage-collected) is still recognised by the characters typed after it.
    """
    parsed = parse_update(state, collect_items=True, limit=None)
    if nesting is not None:
        for placed, depth in parsed.nested:
            nesting.add(placed.client, placed.clock, placed.length, depth)
    evidence: dict[str, set[str]] = {name: set() for name in parsed.root_evidence}
    starts: dict[int, list[int]] = {}
    by_client: dict[int, list[_Item]] = {}
    for item in parsed.items:
        by_client.setdefault(item.client, []).append(item)
    for client, items in by_client.items():
        items.sort(key=lambda it: it.clock)
        starts[client] = [it.clock for it in items]

    def find(ident: tuple[int, int]) -> _Item | None:
        client, clock = ident
        items = by_client.get(client)
        if not items:
            return None
        index = bisect.bisect_right(starts[client], clock) - 1
        if index < 0:
            return None
        item = items[index]
        return item if clock < item.clock + item.length else None

    # Root of each item, and whether it is a map entry, resolved through origin chains
    # without recursion. A new value for an existing key links to the old value and names
    # neither parent nor key, so it inherits both from the item that started the chain.
    resolved: dict[int, tuple[str | None, bool]] = {}
    for item in parsed.items:
        chain: list[_Item] = []
        on_chain: set[int] = set()
        current: _Item | None = item
        found: tuple[str | None, bool] = (None, False)
        while current is not None:
            known = resolved.get(id(current))
            if known is not None:
                found = known
                break
            if id(current) in on_chain:  # a cycle of origins: only hostile input has one
                break
            on_chain.add(id(current))
            chain.append(current)
            if current.parent_key is not None:
                found = (current.parent_key, current.evidence == _EVIDENCE_MAP)
                break
            if current.has_parent_id:
                break
            link = current.origin or current.right
            current = find(link) if link is not None else None
        for linked in chain:
            resolved[id(linked)] = found
        root, keyed = found
        if root is not None:
            kind = _EVIDENCE_MAP if keyed else item.evidence
            if kind:
                evidence.setdefault(root, set()).add(kind)
    return evidence
