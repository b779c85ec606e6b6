"""Valid inputs the fuzzer starts from (Yjs updates, JSON operations, awareness updates, state
vectors, access tokens), and the oracle: what a request would do to a seeded document, asked
of the engine in this process (:class:`crdt.Document` on a copy of the seeded state).

A request may only reach a seeded document when it cannot change it: a read, a request refused
for a reason that holds whatever its body (a token, a content type, a forged header), or a
body the engine itself refuses or finds already applied. The node must agree: a seeded
document's digest never moves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pycrdt

from app.auth import Authorizer, Right, TokenError, bearer_token, create_token
from app.cluster.placement import PlacementError, Topology, resolve_request
from app.errors import ApiError
from app.http.bodies import parse_json
from app.sync import protocol as sync
from app.sync.awareness import encode_update as encode_awareness
from crdt import CrdtError, Document, apply_operations, encode_state_vector, parse_operations
from tests.fuzz.targets._seeds import UPDATES

from .mutate import Mutator

__all__ = [
    "ROOTS",
    "Oracle",
    "Tokens",
    "awareness_update",
    "random_ops",
    "random_update",
    "state_vector",
]

#: Root names shared by every generated update and operation, so that documents written by
#: both get roots of conflicting types.
ROOTS = ("m", "t", "a", "x", "body", "items", "settings")


def _client(rng: random.Random) -> int:
    return rng.choice((rng.randrange(1, 1000), rng.randrange(1, 2**32), rng.randrange(1, 2**53)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.randrange(9 if depth < 2 else 6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.choice((0, -1, 2**31, 2**53 - 1, 3.25, -1e300))
    if roll in (3, 4, 5):
        return rng.choice(("", "x", "é😀", "\u202e", "line\nbreak", "a" * rng.randrange(1, 300)))
    if roll == 6:
        return pycrdt.Map({f"k{i}": _value(rng, depth + 1) for i in range(rng.randrange(3))})
    if roll == 7:
        return pycrdt.Array([_value(rng, depth + 1) for _ in range(rng.randrange(3))])
    return [_plain(rng) for _ in range(rng.randrange(3))]


def _plain(rng: random.Random) -> Any:
    return rng.choice((None, 1, "s", {"a": [1, 2]}, [True, None], 2.5))


#: The roots each kind of generated change uses: one type per root within an update (Yrs
#: panics on a root read as two types), conflicting types across documents all the same
#: (JSON operations use every root with every type).
_ROOTS_BY_KIND = (("m", "settings"), ("t", "body"), ("a", "items"), ("x",))


def _edit(doc: pycrdt.Doc[Any], rng: random.Random) -> None:
    """One random change to ``doc``: a map entry, text (inserted, formatted, deleted), array
    elements, or XML."""
    kind = rng.randrange(4)
    name = rng.choice(_ROOTS_BY_KIND[kind])
    if kind == 0:
        doc.get(name, type=pycrdt.Map)[rng.choice(("k", "theme", "😀", ""))] = _value(rng)
    elif kind == 1:
        text = doc.get(name, type=pycrdt.Text)
        # pycrdt counts UTF-8 bytes: insert at the end, never inside a character.
        text.insert(len(text), rng.choice(("hello", "😀", "é", "\u0301", "x" * 50)))
        if len(str(text)) > 2 and rng.random() < 0.3:
            del text[0:1]
        if rng.random() < 0.2:
            text.format(0, 1, {"bold": True})
    elif kind == 2:
        array = doc.get(name, type=pycrdt.Array)
        array.append(_value(rng))
        if len(array) > 1 and rng.random() < 0.3:
            del array[0]
    else:
        fragment = doc.get(name, type=pycrdt.XmlFragment)
        fragment.children.append(pycrdt.XmlElement("p", {"class": "c"}, [pycrdt.XmlText("x😀")]))


def random_update(rng: random.Random) -> tuple[bytes, bytes]:
    """(a whole update, a later part of the same document alone): the second depends on
    changes only the first holds (sent alone, it waits for them: a pending update)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_client(rng))
    for _ in range(rng.randrange(1, 4)):
        _edit(doc, rng)
    state = doc.get_state()
    for _ in range(rng.randrange(1, 3)):
        _edit(doc, rng)
    return bytes(doc.get_update()), bytes(doc.get_update(state))


def big_update(rng: random.Random) -> bytes:
    """A valid update of 50 to 200 KB (a long text, a long array): below the body limit,
    it takes documents toward theirs."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_client(rng))
    size = rng.randrange(50_000, 200_000)
    if rng.random() < 0.5:
        doc.get("body", type=pycrdt.Text).insert(0, rng.choice("ab😀é") * (size // 4))
    else:
        # A few long strings: pycrdt inserts array elements one at a time, each walking the
        # array from its start (many small elements take minutes: finding 2 of the docs).
        chunk = "x" * 1000
        doc.get("items", type=pycrdt.Array).extend([chunk] * (size // 1000))
    return bytes(doc.get_update())


def random_ops(m: Mutator) -> dict[str, Any]:
    """A PATCH body of valid-looking operations on the shared roots: mostly ones that apply
    to any document (set, append, insert at 0), some that need content already there."""
    rng = m.rng
    ops: list[dict[str, Any]] = []
    for _ in range(rng.randrange(1, 5)):
        root = rng.choice(ROOTS)
        if rng.random() < 0.75:
            kind = rng.randrange(4)
            if kind == 0:
                key = rng.choice(("theme", "k", m.text(4)))
                ops.append({"op": "set", "path": [root, key], "value": m.json_value(2)})
            elif kind == 1:
                ops.append({"op": "append", "path": [root], "values": [m.json_value(2)]})
            elif kind == 2:
                ops.append({"op": "insert_text", "path": [root], "index": 0, "text": m.text()})
            else:
                values = [m.json_value(2) for _ in range(rng.randrange(1, 3))]
                ops.append({"op": "insert", "path": [root], "index": 0, "values": values})
            continue
        kind = rng.randrange(4)
        index = rng.randrange(3)
        if kind == 0:
            ops.append({"op": "delete", "path": [root, rng.choice(("theme", "k", 0))]})
        elif kind == 1:
            ops.append({"op": "delete_text", "path": [root], "index": index, "length": 1})
        elif kind == 2:
            ops.append({"op": "remove", "path": [root], "index": index, "length": 1})
        else:
            text = m.text()
            ops.append({"op": "insert_text", "path": [root], "index": index, "text": text})
    return {"ops": ops}


def awareness_update(m: Mutator) -> bytes:
    """A valid awareness update of one to three clients (a state, ``null``, a large one)."""
    rng = m.rng
    entries = []
    for _ in range(rng.randrange(1, 4)):
        state = rng.choice(
            ('{"user":{"name":"fuzz"}}', "null", '{"cursor":' + str(m.integer()) + "}", "{}")
        )
        if rng.random() < 0.05:
            state = '{"big":"' + "x" * rng.choice((1000, 65_000, 70_000)) + '"}'
        entries.append((_client(rng), rng.randrange(0, 5), state))
    return encode_awareness(entries)


def state_vector(m: Mutator, known: list[bytes]) -> bytes:
    """A state vector: empty, a seeded document's, random clocks, or a mutated one."""
    rng = m.rng
    roll = rng.randrange(5)
    if roll == 0:
        return b"\x00"
    if roll == 1 and known:
        return m.pick(known)
    clocks = {_client(rng): m.integer() % 2**53 for _ in range(rng.randrange(1, 4))}
    vector = encode_state_vector(clocks)
    return m.bytes_(vector) if roll == 4 else vector


# -- tokens ------------------------------------------------------------------------------------


class Tokens:
    """Access tokens for a node with auth on, and the node's own decision about each
    (:class:`app.auth.Authorizer` with the same secret)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.authorizer = Authorizer(secret, required=True)
        day = 86400
        self.admin = create_token(secret, prefix="", rights={"read", "write"}, ttl_seconds=day)
        self.named = {
            "admin": self.admin,
            "reader": create_token(secret, prefix="", rights={"read"}, ttl_seconds=day),
            "fuzz-writer": create_token(
                secret, prefix="fz", rights={"read", "write"}, ttl_seconds=day
            ),
            "fuzz-ids": create_token(
                secret, ids=["fz-1", "fz-2", "seed-map"], rights={"read"}, ttl_seconds=day
            ),
            "expired": create_token(
                secret,
                prefix="",
                rights={"read", "write"},
                ttl_seconds=1,
                now=lambda: time.time() - 10 * day,
            ),
            "other-cluster": create_token(
                b"not-the-secret", prefix="", rights={"read", "write"}, ttl_seconds=day
            ),
        }

    def pick(self, m: Mutator) -> str | None:
        """A token to send: one of the named ones, a mutated one, garbage, or none."""
        roll = m.rng.randrange(10)
        named = [self.named[name] for name in sorted(self.named)]
        if roll < 6:
            return m.pick(named)
        if roll < 8:
            return m.bytes_(m.pick(named).encode()).decode("latin-1")
        if roll < 9:
            return m.pick(("", "mrd1..", "mrd1.e30.AAAA", "x" * 5000, "mrd1." + "A" * 4090))
        return None

    def allows(self, authorization: str | None, doc_id: str | None, right: Right) -> bool:
        """Whether the node grants ``right`` on ``doc_id`` to this Authorization header."""
        try:
            self.authorizer.authorize(bearer_token(authorization), doc_id, right)
        except TokenError:
            return False
        return True


# -- the oracle --------------------------------------------------------------------------------


class Oracle:
    """The seeded documents' states as this process holds them, and what a body would do to
    one: True from ``*_changes`` means it could change it (send it to a fuzz document)."""

    def __init__(self, states: dict[str, bytes | None], topology: Topology, max_ops: int) -> None:
        #: Seeded document -> its whole state (None: deleted, a tombstone).
        self.states = states
        self.topology = topology
        self.max_ops = max_ops
        self._digests = {doc: self._copy(doc).digest() for doc, s in states.items() if s}

    def _copy(self, doc_id: str) -> Document:
        document = Document(doc_id)
        state = self.states[doc_id]
        if state:
            document.apply_update(state)
        return document

    def update_changes(self, doc_id: str, update: bytes) -> bool:
        return self._changes(doc_id, lambda copy: copy.apply_update(update))

    def ops_change(self, doc_id: str, body: bytes) -> bool:
        def apply(copy: Document) -> bool:
            ops = parse_operations(parse_json(body), max_operations=self.max_ops)
            delta = apply_operations(copy, ops, client_id=1)
            return copy.apply_update(delta)

        return self._changes(doc_id, apply)

    def frame_changes(self, doc_id: str, frame: bytes) -> bool:
        """Whether a y-websocket frame could change the document (an update it takes)."""
        try:
            message = sync.decode(frame)
        except sync.SyncProtocolError:
            return False
        if isinstance(message, sync.SyncStep2 | sync.SyncUpdate):
            return message.update != b"\x00\x00" and self.update_changes(doc_id, message.update)
        return False

    def placement_changes(self, body: bytes) -> bool:
        try:
            resolve_request(parse_json(body), self.topology, self.topology.regions[0])
        except (ApiError, PlacementError):
            return False
        return True

    def _changes(self, doc_id: str, apply: Callable[[Document], bool]) -> bool:
        copy = self._copy(doc_id)
        try:
            stored = apply(copy)
        except (CrdtError, ApiError):
            return False
        except Exception:
            return True  # the engine failed in a way it should not: never near a seeded copy
        if self.states[doc_id] is None:
            return True  # any accepted write starts the deleted document's next incarnation
        return stored or copy.digest() != self._digests[doc_id]


def seed_updates() -> list[bytes]:
    """The tests' own seed updates (tests/fuzz/targets/_seeds.py): a map, a text, an array."""
    return list(UPDATES)


def text_history(client_id: int) -> list[bytes]:
    """Updates of a text written, formatted and cut in several steps (compacted on the node:
    more updates than ``compact_after_updates``)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    text = doc.get("body", type=pycrdt.Text)
    for word in ("Hello", ", ", "wörld", " 😀", " and", " more", " text", "!"):
        text += word
    del text[0:1]
    text.insert(0, "h")
    text.format(0, 5, {"bold": True})
    return updates


def map_update(client_id: int) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["settings"] = pycrdt.Map(
        {
            "title": "Seeded",
            "n": 42,
            "emoji": "😀",
            "nested": pycrdt.Map({"list": pycrdt.Array([1, "two", None])}),
        }
    )
    return bytes(doc.get_update())


def array_and_xml_update(client_id: int) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["items"] = pycrdt.Array([1, "x", {"a": 1}, [2, 3]])
    del doc.get("items", type=pycrdt.Array)[1]
    doc["x"] = pycrdt.XmlFragment(
        [pycrdt.XmlElement("p", {"id": "1"}, [pycrdt.XmlText("para 😀")])]
    )
    return bytes(doc.get_update())
