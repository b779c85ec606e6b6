"""JSON operations, as PATCH /v1/docs/{id} reads them: the body through
:func:`app.http.bodies.parse_json` (ApiError 400), then
:func:`crdt.ops.parse_operations` and :func:`crdt.ops.apply_operations` (CrdtError); the update
made applies to the document and leaves JSON that serialises."""

from __future__ import annotations

import json

from app.errors import ApiError
from app.http.bodies import parse_json
from crdt import CrdtError
from crdt.ops import OPERATIONS, apply_operations, parse_operations

from ._seeds import open_document

_BODIES = [
    {"ops": [{"op": "append", "path": ["a"], "values": [1, {"x": [2]}]}]},
    {"ops": [{"op": "set", "path": ["m", "k"], "value": {"deep": [1, 2.5, None, True]}}]},
    {"ops": [{"op": "delete", "path": ["m", "nested"]}]},
    {"ops": [{"op": "insert_text", "path": ["t"], "index": 2, "text": "héllo"}]},
    {"ops": [{"op": "delete_text", "path": ["t"], "index": 1, "length": 3}]},
    {"ops": [{"op": "insert", "path": ["a"], "index": 0, "values": ["x", [1]]}]},
    {"ops": [{"op": "remove", "path": ["a"], "index": 0, "length": 1}]},
    {"ops": [{"op": "set", "path": ["m", "nested", "a"], "value": 1}]},
    {"ops": [{"op": "append", "path": ["new", 0], "values": [1]}]},
]


def seeds() -> list[bytes]:
    return [json.dumps(body).encode() for body in _BODIES]


def dictionary() -> list[bytes]:
    words = ["ops", "op", "path", "value", "values", "index", "length", "text", *OPERATIONS]
    return [f'"{word}"'.encode() for word in words] + [b"[", b"]", b"{", b"}", b":", b",", b"null"]


def test_one_input(data: bytes) -> None:
    try:
        body = parse_json(data)
    except ApiError as exc:
        if exc.status != 400:
            raise
        return
    try:
        ops = parse_operations(body, max_operations=100)
    except CrdtError:
        return
    with open_document() as doc:
        try:
            update = apply_operations(doc, ops, client_id=11)
        except CrdtError:
            return
        doc.apply_update(update)
        json.dumps(doc.to_json())
