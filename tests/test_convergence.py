"""Property: any set of updates applied in any order, with duplicates, gives byte-identical
state and identical JSON."""

from __future__ import annotations

import os
from typing import Any

import pycrdt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import Document

# An edit a client makes: (client index, kind, position seed, payload)
edits = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(
            ["text_insert", "text_delete", "map_set", "map_delete", "array_push", "array_remove"]
        ),
        st.integers(0, 1000),
        st.text(alphabet="ab😀é", min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=25,
)


def _make_updates(script: list[tuple[int, str, int, str]]) -> list[bytes]:
    """Three clients edit concurrently and sometimes sync; returns every update they emit."""
    clients = [pycrdt.Doc(client_id=100 + i) for i in range(3)]
    updates: list[bytes] = []
    for doc in clients:
        doc.observe(lambda event: updates.append(event.update))
    for step, (who, kind, seed, payload) in enumerate(script):
        doc = clients[who]
        text = doc.get("body", type=pycrdt.Text)
        table = doc.get("settings", type=pycrdt.Map)
        items = doc.get("items", type=pycrdt.Array)
        if kind == "text_insert":
            current = str(text)
            chars = len(current)
            index = seed % (chars + 1)
            text.insert(len(current[:index].encode()), payload)
        elif kind == "text_delete" and str(text):
            current = str(text)
            index = seed % len(current)
            start = len(current[:index].encode())
            end = len(current[: index + 1].encode())
            del text[start:end]
        elif kind == "map_set":
            table[f"k{seed % 4}"] = payload
        elif kind == "map_delete" and f"k{seed % 4}" in table:
            del table[f"k{seed % 4}"]
        elif kind == "array_push":
            items.append({"v": payload, "n": seed})
        elif kind == "array_remove" and len(items):
            del items[seed % len(items)]
        if step % 5 == 4:  # occasionally a pair of clients syncs
            a, b = clients[who], clients[(who + 1) % 3]
            b.apply_update(a.get_update(b.get_state()))
    return updates


def _view(updates: list[bytes]) -> tuple[bytes, bytes, dict[str, Any]]:
    document = Document("p")
    for update in updates:
        document.apply_update(update)
    return document.canonical_state(), document.state_vector(), document.to_json()


@settings(
    max_examples=int(os.environ.get("MERIDIAN_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(script=edits, data=st.data())
def test_any_order_with_duplicates_converges(
    script: list[tuple[int, str, int, str]], data: st.DataObject
) -> None:
    updates = _make_updates(script)
    if not updates:  # every edit was a no-op (e.g. deleting from an empty text)
        return
    reference = _view(updates)
    shuffled = data.draw(st.permutations(updates), label="order")
    duplicates = data.draw(st.lists(st.sampled_from(updates), max_size=5), label="duplicates")
    mixed = list(shuffled)
    for extra in duplicates:
        mixed.insert(data.draw(st.integers(0, len(mixed)), label="at"), extra)
    other = _view(mixed)
    assert other[0] == reference[0], "canonical state bytes differ"
    assert other[1] == reference[1], "state vectors differ"
    assert other[2] == reference[2], "JSON differs"
