"""Valid values the targets start from, the same as tests/test_fuzz_parsers.py's seeds:
a real Yjs update, peer and client frames, a placement-free document."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pycrdt

from crdt import Document


def _updates() -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    doc["m"] = pycrdt.Map({"k": 1, "nested": pycrdt.Map({"a": [1, "x"]})})
    doc["t"] = pycrdt.Text("hello")
    doc.get("t", type=pycrdt.Text).insert(2, "XYZ")
    doc["a"] = pycrdt.Array([1, 2, pycrdt.Map({"z": None})])
    del doc.get("a", type=pycrdt.Array)[0]
    return [*updates, bytes(doc.get_update())]


#: Updates of one document (client 7), each as Yjs sent it, then its whole state.
UPDATES = _updates()
#: The state vector of a document holding UPDATES.
STATE_VECTOR = b"\x01\x07\x0f"


@contextmanager
def open_document() -> Iterator[Document]:
    """A fresh document holding UPDATES (a map, a text and an array at the root).

    (Until the fixes of the leak this fuzzing found — a Document, then its pycrdt Doc, kept
    alive through their Yrs observer, ~10 KB per input — the target released it by hand.)
    """
    doc = Document("fuzzed")
    doc.apply_update(UPDATES[-1])
    yield doc
