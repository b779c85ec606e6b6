"""The seeded documents: written once through every write path (binary updates, JSON
operations, a y-websocket client, a delete), recorded (digest, content, incarnation,
placement), and checked after every batch: nothing the fuzzer sends may change them."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import httpx
import pycrdt
from websockets.sync.client import connect

from app.cluster.placement import Topology
from app.sync import protocol as sync
from crdt import Document

from .content import Oracle, array_and_xml_update, map_update, seed_updates, text_history

__all__ = ["Seeded", "seed"]

OCTET = {"Content-Type": "application/octet-stream"}
TOMBSTONE = "seed-gone"
PATCH_OPS = {
    "ops": [
        {"op": "set", "path": ["settings", "theme"], "value": "dark"},
        {"op": "set", "path": ["settings", "nested"], "value": {"a": [1, {"b": None}]}},
        {"op": "insert_text", "path": ["body"], "index": 0, "text": "a😀b é"},
        {"op": "append", "path": ["items"], "values": [1, "two", {"three": 3}]},
    ]
}
#: The placement fields that must not move (holders may, in principle).
PLACEMENT_FIELDS = ("policy", "regions", "replicas", "pinned", "home")


@dataclass(slots=True)
class Record:
    digest: str
    incarnation: int
    content: dict[str, Any]
    state_vector: str
    placement: dict[str, Any]


@dataclass(slots=True)
class Seeded:
    """What the seeded documents hold, and how to check that they still do."""

    records: dict[str, Record] = field(default_factory=dict)
    states: dict[str, bytes | None] = field(default_factory=dict)
    tombstone: str = TOMBSTONE

    def oracle(self, max_ops: int) -> Oracle:
        topology = Topology(regions=("eu-west",), latency_ms={}, replicas=1)
        return Oracle(dict(self.states), topology, max_ops)

    def vectors(self) -> list[bytes]:
        return [base64.b64decode(r.state_vector) for r in self.records.values()]

    def verify(self, client: httpx.Client, headers: dict[str, str]) -> list[tuple[str, str]]:
        """(document, what changed) for each seeded document that is not as recorded."""
        problems = []
        for doc, record in self.records.items():
            answer = client.get(f"/v1/docs/{doc}", params={"digest": "true"}, headers=headers)
            if answer.status_code != 200:
                problems.append((doc, f"GET answered {answer.status_code}: {answer.text[:300]}"))
                continue
            view = answer.json()
            if view["digest"] != record.digest:
                problems.append((doc, f"digest {view['digest']} instead of {record.digest}"))
            elif view["incarnation"] != record.incarnation or view["content"] != record.content:
                problems.append((doc, f"view changed: {str(view)[:300]}"))
            answer = client.get(f"/v1/docs/{doc}/placement", headers=headers)
            placement = {k: answer.json().get(k) for k in PLACEMENT_FIELDS}
            if answer.status_code != 200 or placement != record.placement:
                problems.append((doc, f"placement changed: {answer.text[:300]}"))
        answer = client.get(f"/v1/docs/{self.tombstone}", headers=headers)
        if answer.status_code != 404:
            problems.append((self.tombstone, f"deleted, yet GET answered {answer.status_code}"))
        return problems


def seed(client: httpx.Client, headers: dict[str, str], ws_url: str) -> Seeded:
    """Writes the seeded documents through every write path and records them."""

    def post(doc: str, update: bytes) -> None:
        answer = client.post(f"/v1/docs/{doc}/update", content=update, headers=headers | OCTET)
        assert answer.status_code == 200, answer.text

    post("seed-map", map_update(1001))
    for update in text_history(1002):
        post("seed-text", update)
    post("seed-items", array_and_xml_update(1003))
    for update in seed_updates():
        post("seed-mixed", update)
    answer = client.patch("/v1/docs/seed-patch", json=PATCH_OPS, headers=headers)
    assert answer.status_code == 200, answer.text
    _write_through_websocket(ws_url, "seed-ws", headers)
    post(TOMBSTONE, map_update(1005))
    assert client.delete(f"/v1/docs/{TOMBSTONE}", headers=headers).status_code == 200

    seeded = Seeded()
    for doc in ("seed-map", "seed-text", "seed-items", "seed-mixed", "seed-patch", "seed-ws"):
        view = client.get(f"/v1/docs/{doc}", params={"digest": "true"}, headers=headers).json()
        placement = client.get(f"/v1/docs/{doc}/placement", headers=headers).json()
        seeded.records[doc] = Record(
            view["digest"],
            view["incarnation"],
            view["content"],
            view["state_vector"],
            {k: placement.get(k) for k in PLACEMENT_FIELDS},
        )
        state = client.get(f"/v1/docs/{doc}/update", headers=headers).content
        copy = Document(doc)
        copy.apply_update(state)
        # The oracle asks a copy of this state: it must be the node's, to the byte.
        assert copy.digest() == view["digest"], f"{doc}: the copy here differs from the node's"
        seeded.states[doc] = state
    seeded.states[TOMBSTONE] = None
    problems = seeded.verify(client, headers)
    assert not problems, problems
    return seeded


def _write_through_websocket(ws_url: str, doc: str, headers: dict[str, str]) -> None:
    writer: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1004)
    writer.get("body", type=pycrdt.Text).insert(0, "written through y-websocket 😀")
    update = bytes(writer.get_update())
    with connect(
        f"{ws_url}/v1/sync/{doc}", additional_headers=headers, proxy=None, open_timeout=30
    ) as ws:
        ws.send(sync.encode_update(update))
        ws.send(sync.encode_sync_step1(b"\x00"))
        while True:  # the answer to step 1 comes once the update was applied
            message = ws.recv(timeout=30)
            if isinstance(message, bytes) and message[:2] == b"\x00\x01" and len(message) > 4:
                return
