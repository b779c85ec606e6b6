"""The document engine without networking: validation, pending updates, JSON view, operations."""

from __future__ import annotations

import os
import random
from typing import Any

import pycrdt
import pytest

from crdt import Document, InvalidOperation, InvalidUpdate, LimitExceeded, parse_operations
from crdt.document import fold_updates
from crdt.ops import apply_operations
from crdt.yupdate import RootKind, canonical_update, parse_update

SEED = int(os.environ.get("MERIDIAN_TEST_SEED", random.randrange(2**32)))


def _sample_updates() -> list[bytes]:
    doc = pycrdt.Doc(client_id=7)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("body", type=pycrdt.Text)
    text += "héllo 😀 world"
    table = doc.get("settings", type=pycrdt.Map)
    table["theme"] = "dark"
    table["nested"] = pycrdt.Map({"n": 1, "list": pycrdt.Array([1, "two"])})
    items = doc.get("items", type=pycrdt.Array)
    items.append({"a": 1, "b": [True, None]})
    del text[0:1]  # pycrdt indexes UTF-8 bytes: never cut inside a character
    return [*updates, doc.get_update()]


def _ops(*ops: dict[str, Any]) -> list[dict[str, Any]]:
    return parse_operations({"ops": list(ops)}, max_operations=100)


def _snapshot(document: Document) -> tuple[str, bytes, dict[str, Any]]:
    return document.digest(), document.state_vector(), document.to_json()


def test_hostile_bytes_are_refused_and_change_nothing() -> None:
    rng = random.Random(SEED)
    valid = _sample_updates()
    document = Document("d", client_id=1)
    for update in valid[:-1]:
        document.apply_update(update)
    before = _snapshot(document)
    cases: list[bytes] = [b"", b"\x00", b"\xff" * 20, b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\x0f"]
    # huge declared counts and lengths at the start and inside a valid update
    cases += [
        b"\x01" + b"\xff\xff\xff\xff\x0f" + b"\x00" * 8,
        b"\x01\x01\x01\x00\x04\x01\xff\xff\xff\x7f",
    ]
    for _ in range(400):
        kind = rng.randrange(4)
        base = rng.choice(valid)
        if kind == 0:
            case = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        elif kind == 1:
            case = base[: rng.randrange(len(base))]
        elif kind == 2:
            mutated = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            case = bytes(mutated)
        else:
            position = rng.randrange(len(base))
            case = base[:position] + b"\xff\xff\xff\xff\xff\xff\x0f" + base[position + 1 :]
        cases.append(case)
    for case in cases:
        probe = Document("probe", client_id=1)
        for update in valid[:-1]:
            probe.apply_update(update)
        try:
            probe.apply_update(case)
        except (InvalidUpdate, LimitExceeded):
            if not probe.poisoned:
                assert _snapshot(probe) == before, f"seed={SEED} case={case.hex()}"
    # the original document never saw any of it
    assert _snapshot(document) == before


def test_truncated_update_is_invalid_with_a_clear_message() -> None:
    update = _sample_updates()[-1]
    with pytest.raises(InvalidUpdate, match="not a valid Yjs v1 update"):
        Document("d").apply_update(update[:-3])
    with pytest.raises(InvalidUpdate, match="unexpected bytes after the update"):
        Document("d").apply_update(update + b"\x00")


def test_update_with_missing_dependency_waits_then_integrates() -> None:
    writer = pycrdt.Doc(client_id=9)
    text = writer.get("t", type=pycrdt.Text)
    text += "hello"
    first = writer.get_update()
    state = writer.get_state()
    text += " world"
    second = writer.get_update(state)

    document = Document("d")
    assert document.apply_update(second) is True  # stored: it must not be lost
    assert document.has_pending
    assert document.state_vector() == b"\x00"  # the state vector reports integrated changes only
    assert document.to_json() == {}
    # the whole state still carries the pending part: a copy made from it loses nothing
    copy = Document("copy")
    copy.apply_update(document.encode_state())
    assert copy.has_pending

    document.apply_update(first)
    assert not document.has_pending
    assert document.to_json() == {"t": "hello world"}
    copy.apply_update(first)
    assert copy.digest() == document.digest()


def test_fold_updates_keeps_pending_parts() -> None:
    writer = pycrdt.Doc(client_id=9)
    array = writer.get("a", type=pycrdt.Array)
    array.append(1)
    first = writer.get_update()
    state = writer.get_state()
    array.append(2)
    second = writer.get_update(state)
    other = pycrdt.Doc(client_id=10)
    other.get("m", type=pycrdt.Map)["k"] = "v"
    folded = fold_updates([other.get_update(), second])
    document = Document("d")
    document.apply_update(folded)
    document.apply_update(first)
    assert document.to_json() == {"a": [1, 2], "m": {"k": "v"}}


def test_duplicate_update_is_not_stored_again() -> None:
    update = _sample_updates()[-1]
    document = Document("d")
    assert document.apply_update(update) is True
    assert document.apply_update(update) is False


def test_json_view_infers_root_types_and_renders_numbers_like_javascript() -> None:
    document = Document("d")
    document.apply_update(_sample_updates()[-1])
    assert document.root_kinds() == {
        "body": RootKind.TEXT,
        "settings": RootKind.MAP,
        "items": RootKind.ARRAY,
    }
    assert document.to_json() == {
        "body": "éllo 😀 world",
        "settings": {"theme": "dark", "nested": {"n": 1, "list": [1, "two"]}},
        "items": [{"a": 1, "b": [True, None]}],
    }


def test_text_whose_first_item_was_deleted_is_still_text_after_reload() -> None:
    writer = pycrdt.Doc(client_id=3)
    text = writer.get("t", type=pycrdt.Text)
    text += "a"
    text += "bc"
    del text[0:1]
    snapshot = fold_updates([writer.get_update()])
    assert parse_update(snapshot).root_evidence == {"t": set()}  # nothing explicit left
    document = Document("d")
    document.load([snapshot])
    assert document.to_json() == {"t": "bc"}


def test_canonical_update_sorts_object_keys() -> None:
    one = pycrdt.Doc(client_id=5)
    one.get("a", type=pycrdt.Array).append({"z": 1, "a": {"y": 2, "b": 3}})
    update = one.get_update()
    canonical = canonical_update(update)
    assert canonical_update(canonical) == canonical
    decoded = pycrdt.Doc()
    decoded.apply_update(canonical)
    assert decoded.get("a", type=pycrdt.Array).to_py() == [{"a": {"b": 3.0, "y": 2.0}, "z": 1.0}]


# -- JSON operations ----------------------------------------------------------------------


def _apply(document: Document, *ops: dict[str, Any]) -> None:
    document.apply_update(apply_operations(document, _ops(*ops), client_id=11))


def test_operations_create_roots_and_count_code_points() -> None:
    document = Document("d", client_id=11)
    _apply(
        document,
        {"op": "set", "path": ["settings", "theme"], "value": "dark"},
        {"op": "set", "path": ["settings", "deep", "x"], "value": {"k": [1, 2.5, None]}},
        {"op": "insert_text", "path": ["body"], "index": 0, "text": "a😀b"},
        {"op": "insert_text", "path": ["body"], "index": 2, "text": "é"},
        {"op": "append", "path": ["items"], "values": [1, {"a": 2}]},
        {"op": "insert", "path": ["items"], "index": 0, "values": ["first"]},
    )
    assert document.to_json() == {
        "settings": {"theme": "dark", "deep": {"x": {"k": [1, 2.5, None]}}},
        "body": "a😀éb",
        "items": ["first", 1, {"a": 2}],
    }
    _apply(
        document,
        {"op": "delete_text", "path": ["body"], "index": 1, "length": 2},
        {"op": "remove", "path": ["items"], "index": 0, "length": 2},
        {"op": "delete", "path": ["settings", "theme"]},
        {"op": "delete", "path": ["settings", "missing"]},  # deleting a missing key: no-op
        {"op": "set", "path": ["items", 0, "a"], "value": 3},
    )
    assert document.to_json() == {
        "settings": {"deep": {"x": {"k": [1, 2.5, None]}}},
        "body": "ab",
        "items": [{"a": 3}],
    }


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (
            {"op": "insert_text", "path": ["settings"], "index": 0, "text": "x"},
            "is a map, not a text",
        ),
        ({"op": "append", "path": ["body"], "values": [1]}, "is a text, not an array"),
        ({"op": "insert_text", "path": ["body"], "index": 99, "text": "x"}, "outside the text"),
        ({"op": "delete_text", "path": ["body"], "index": 2, "length": 5}, "outside the text"),
        ({"op": "remove", "path": ["items"], "index": 0, "length": 9}, "outside the array"),
        ({"op": "insert", "path": ["items"], "index": 5, "values": [1]}, "past the end"),
        ({"op": "set", "path": ["items", 7], "value": 1}, "out of range"),
        ({"op": "set", "path": ["settings", "theme", "x"], "value": 1}, "is a value, not a map"),
        ({"op": "set", "path": ["settings", "n"], "value": 2**60}, "outside ±2\\*\\*53"),
        ({"op": "delete", "path": ["nothing", "x"]}, "no root named"),
    ],
)
def test_one_invalid_operation_rejects_the_whole_request(op: dict[str, Any], message: str) -> None:
    document = Document("d", client_id=11)
    _apply(
        document,
        {"op": "set", "path": ["settings", "theme"], "value": "dark"},
        {"op": "insert_text", "path": ["body"], "index": 0, "text": "ab"},
        {"op": "append", "path": ["items"], "values": [1]},
    )
    before = _snapshot(document)
    with pytest.raises(InvalidOperation, match=message):
        _apply(document, {"op": "set", "path": ["settings", "other"], "value": 1}, op)
    assert _snapshot(document) == before


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"ops": "x"},
        {"ops": []},
        {"ops": [1]},
        {"ops": [{"op": "explode", "path": ["a"]}]},
        {"ops": [{"op": "set", "path": []}]},
        {"ops": [{"op": "set", "path": [1, "a"], "value": 1}]},
        {"ops": [{"op": "set", "path": ["a"], "value": 1}]},
        {"ops": [{"op": "set", "path": ["a", 1.5], "value": 1}]},
        {"ops": [{"op": "set", "path": ["a", "b"]}]},
        {"ops": [{"op": "insert_text", "path": ["t"], "index": -1, "text": "x"}]},
        {"ops": [{"op": "insert_text", "path": ["t"], "index": True, "text": "x"}]},
        {"ops": [{"op": "insert_text", "path": ["t"], "index": 0, "text": 5}]},
        {"ops": [{"op": "append", "path": ["t"], "values": "x"}]},
        {"ops": [{"op": "append", "path": ["t"], "values": [], "extra": 1}]},
    ],
)
def test_malformed_operations_are_refused(body: Any) -> None:
    with pytest.raises(InvalidOperation):
        parse_operations(body, max_operations=10)


def test_too_many_operations() -> None:
    ops = [{"op": "append", "path": ["a"], "values": [i]} for i in range(11)]
    with pytest.raises(LimitExceeded) as info:
        parse_operations({"ops": ops}, max_operations=10)
    assert info.value.limit == "max_operations"


def test_deeply_nested_value_is_refused() -> None:
    value: Any = 1
    for _ in range(100):
        value = [value]
    document = Document("d", client_id=11)
    with pytest.raises(InvalidOperation, match="nested deeper"):
        _apply(document, {"op": "set", "path": ["m", "k"], "value": value})


def test_the_cached_state_vector_follows_every_change() -> None:
    """Document.state_vector() is cached until the next transaction: after updates in and out
    of order (some pending, integrated later), local operations and duplicates, it always
    equals the vector computed afresh from Yrs."""
    from crdt.statevector import decode_state_vector, encode_state_vector

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    updates: list[bytes] = []
    for client in range(3):
        source = pycrdt.Doc(client_id=client + 1)
        text = source.get("body", type=pycrdt.Text)
        source.observe(lambda event: updates.append(event.update))
        for _ in range(5):
            text += rng.choice("abc")
    rng.shuffle(updates)  # out of order: later ones wait for their dependencies
    doc = Document("d")

    def fresh() -> bytes:
        return encode_state_vector(decode_state_vector(bytes(doc._doc.get_state())))

    for update in updates + updates[:3]:
        doc.apply_update(update)
        assert doc.state_vector() == fresh(), f"seed={seed}"
        assert doc.clocks() == decode_state_vector(fresh()), f"seed={seed}"
    ops = {"ops": [{"op": "append", "path": ["items"], "values": [1]}]}
    doc.apply_update(apply_operations(doc, parse_operations(ops, max_operations=10), client_id=11))
    assert doc.state_vector() == fresh(), f"seed={seed}"
    clocks = doc.clocks()
    clocks[999] = 1  # a copy: the cache is not changed through it
    assert 999 not in doc.clocks()


def test_a_dropped_document_is_freed() -> None:
    """A Document must not outlive its last reference: Yrs holds the transaction observer,
    so an observer holding the Document strongly kept every Document ever made alive (a
    leak of every document a node evicted or replaced; found by fuzzing)."""
    import gc
    import weakref

    refs = []
    for i in range(20):
        document = Document(f"d{i}")
        source = pycrdt.Doc()
        source.get("body", type=pycrdt.Text).insert(0, "x")
        document.apply_update(source.get_update())
        assert document.state_vector()
        refs.append(weakref.ref(document))
        del document
    gc.collect()
    assert [ref() for ref in refs] == [None] * 20


def test_updates_that_would_spin_yrs_forever_are_refused() -> None:
    """Found by fuzzing: a 42-byte update whose client appears twice (two runs claiming the
    same ids) and whose item names itself as its origin made Yrs loop forever in
    apply_update — a client could hang a node's event loop. Each defect alone is refused."""
    from crdt.lib0 import Encoder

    def item(client: int, clock: int, origin: tuple[int, int] | None) -> bytes:
        enc = Encoder()
        enc.write_var_uint(1)  # one struct
        enc.write_var_uint(client)
        enc.write_var_uint(clock)
        if origin is None:
            enc.write_uint8(4)  # a string item with a parent
            enc.write_var_uint(1)  # parent: a root name
            enc.write_var_string("body")
        else:
            enc.write_uint8(0x80 | 4)  # a string item after ``origin``
            enc.write_var_uint(origin[0])
            enc.write_var_uint(origin[1])
        enc.write_var_string("ab")
        return enc.to_bytes()

    def update(*runs: bytes) -> bytes:
        enc = Encoder()
        enc.write_var_uint(len(runs))
        body = b"".join(runs)
        return enc.to_bytes() + body + b"\x00"  # an empty delete set

    document = Document("d")
    # an item whose origin lies inside its own range
    with pytest.raises(InvalidUpdate, match="refers to itself"):
        document.apply_update(update(item(7, 0, (7, 1))))
    # one client twice
    with pytest.raises(InvalidUpdate, match="appears twice"):
        document.apply_update(update(item(7, 0, None), item(7, 0, None)))
    # the well-formed neighbours of those are applied
    document.apply_update(update(item(7, 0, None)))
    document.apply_update(update(item(7, 2, (7, 1))))
    assert document.to_json()["body"] == "abab"
