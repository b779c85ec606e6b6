"""The HTTP clients of ``meridian torture``, and the final read of every holder's copies.

Each client draws, per request, one of the enabled HTTP workloads (their checks:
:mod:`app.tools.torture_check` for list-append, :mod:`app.tools.torture_check_workloads` for the
rest), writes one unique value to one of that workload's documents at a random node with a
random durability level, and records the outcome in the run's history:

* ``list-append``: ``append`` to root array ``items`` of ``torture-<i>``; one acknowledged
  write in ten read back from another node with ``after=``;
* ``counters``: an increment of 1-3, a ``set`` of a unique key of root map ``counter``
  (``torture-counter-<i>``);
* ``text``: ``insert_text`` of a unique token ``<c3-17>`` at index 0 of root text ``body``
  (``torture-text-<i>``);
* ``maps``: a ``set`` of a unique key of root map ``map`` (``torture-map-<i>``), or (one
  time in three, once the client has an acknowledged set not deleted yet) the ``delete`` of
  one of its keys, sent to the node its set went to;
* ``deletes``: an ``append`` to root array ``items`` of ``torture-del-<i>``, or (one time in
  eight) ``DELETE`` of that document; the next append re-creates it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from .demo_cluster import LocalCluster
from .torture_check import Copy, Op, outcome_of
from .torture_check_workloads import Held

if TYPE_CHECKING:
    from .torture import Run

__all__ = ["DOCUMENT_PREFIX", "ROOT", "Workload", "read_copies", "read_held"]

#: Seconds a client waits for one answer.
REQUEST_TIMEOUT = 8.0
#: Share of acknowledged list-append writes read back from another node with after=.
READ_BACK = 0.1
#: Share of the deletes workload's requests that delete the document.
DROP = 1 / 8
#: Share of the maps workload's requests that delete a key (when there is one to delete).
DELETE_KEY = 1 / 3
#: Each workload's document ids start with this, and the root it writes.
DOCUMENT_PREFIX = {
    "list-append": "torture-",
    "counters": "torture-counter-",
    "text": "torture-text-",
    "maps": "torture-map-",
    "deletes": "torture-del-",
    "yjs": "torture-yjs-",
}
ROOT = {
    "list-append": "items",
    "counters": "counter",
    "text": "body",
    "maps": "map",
    "deletes": "items",
    "yjs": "tokens",
}


def documents(workload: str, count: int) -> list[str]:
    """The documents of a workload: ``count`` for list-append, a third of it for the others
    (at least one)."""
    if workload != "list-append":
        count = max(1, count // 3)
    return [f"{DOCUMENT_PREFIX[workload]}{i}" for i in range(count)]


@dataclass(slots=True)
class Answer:
    """What a request got: a status (None: no answer, ``error`` says why), the JSON body of a
    200 or 202, and the node that served it."""

    status: int | None = None
    error: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    served_by: str = ""


@dataclass(slots=True)
class Client:
    """One client's own state: its next value, and its acknowledged map keys not yet deleted
    (doc, key, the node the set went to)."""

    index: int
    rng: random.Random
    count: int = 0
    keys: list[tuple[str, str, str]] = field(default_factory=list)

    def next_value(self) -> str:
        self.count += 1
        return f"c{self.index}-{self.count - 1}"


class Workload:
    """Clients writing over HTTP, each request to a random node."""

    def __init__(
        self, cluster: LocalCluster, run: Run, seed: int, workloads: tuple[str, ...]
    ) -> None:
        self.cluster = cluster
        self.run = run
        self.seed = seed
        options = run.options
        self.docs = {name: documents(name, options.documents) for name in DOCUMENT_PREFIX}
        self.workloads = [name for name in workloads if name != "yjs"]
        # Not "region": one node of a region holds each document (nodes_per_region = 1), so
        # that level is refused (422 durability_unavailable) by design.
        self.levels = ["local", "local", "quorum", "all"]
        self.http: dict[str, httpx.AsyncClient] = {}
        self.nodes = sorted(cluster.nodes)

    async def __aenter__(self) -> Workload:
        for node_id, node in self.cluster.nodes.items():
            self.http[node_id] = httpx.AsyncClient(
                base_url=node.url, timeout=REQUEST_TIMEOUT, trust_env=False
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.http.values():
            await client.aclose()

    async def client(self, index: int, until: float) -> None:
        """Requests until ``until`` (seconds of the run), each of a workload drawn at random."""
        client = Client(index, random.Random(f"{self.seed}/client/{index}"))
        steps = {
            "list-append": self.list_append,
            "counters": self.counters,
            "text": self.text,
            "maps": self.maps,
            "deletes": self.deletes,
        }
        while self.workloads and self.run.now() < until:
            await steps[client.rng.choice(self.workloads)](client)
            await asyncio.sleep(client.rng.uniform(0, 0.02))

    # -- one request of each workload ------------------------------------------------------

    async def list_append(self, client: Client) -> None:
        rng = client.rng
        doc, node = rng.choice(self.docs["list-append"]), rng.choice(self.nodes)
        value = client.next_value()
        body = _ops({"op": "append", "path": ["items"], "values": [value]})
        op = await self._patch(client, "list-append", "append", doc, node, value, body)
        if op.outcome == "ok" and rng.random() < READ_BACK:
            other = rng.choice([n for n in self.nodes if n != node] or self.nodes)
            await self._read_back(other, doc, value, op.state_vector)

    async def counters(self, client: Client) -> None:
        rng = client.rng
        doc, node = rng.choice(self.docs["counters"]), rng.choice(self.nodes)
        key, amount = client.next_value(), rng.randint(1, 3)
        body = _ops({"op": "set", "path": ["counter", key], "value": amount})
        await self._patch(client, "counters", "increment", doc, node, key, body, amount=amount)

    async def text(self, client: Client) -> None:
        rng = client.rng
        doc, node = rng.choice(self.docs["text"]), rng.choice(self.nodes)
        token = client.next_value()
        body = _ops({"op": "insert_text", "path": ["body"], "index": 0, "text": f"<{token}>"})
        await self._patch(client, "text", "insert", doc, node, token, body)

    async def maps(self, client: Client) -> None:
        rng = client.rng
        if client.keys and rng.random() < DELETE_KEY:
            doc, key, node = client.keys.pop(rng.randrange(len(client.keys)))
            body = _ops({"op": "delete", "path": ["map", key]})
            await self._patch(client, "maps", "delete", doc, node, key, body)
            return
        doc, node = rng.choice(self.docs["maps"]), rng.choice(self.nodes)
        key, value = client.next_value(), rng.randint(1, 1_000_000)
        body = _ops({"op": "set", "path": ["map", key], "value": value})
        op = await self._patch(client, "maps", "set", doc, node, key, body, amount=value)
        if op.outcome == "ok":
            client.keys.append((doc, key, node))

    async def deletes(self, client: Client) -> None:
        rng = client.rng
        doc, node = rng.choice(self.docs["deletes"]), rng.choice(self.nodes)
        value = client.next_value()
        if rng.random() < DROP:
            start = self.run.now()
            answer = await self._send("DELETE", node, f"/v1/docs/{doc}")
            self._record(answer, "deletes", "drop", doc, node, value, start, "local")
            return
        body = _ops({"op": "append", "path": ["items"], "values": [value]})
        await self._patch(client, "deletes", "append", doc, node, value, body)

    # -- requests and the history ----------------------------------------------------------

    async def _patch(
        self,
        client: Client,
        workload: str,
        kind: str,
        doc: str,
        node: str,
        value: str,
        body: dict[str, Any],
        amount: int = 0,
    ) -> Recorded:
        level = client.rng.choice(self.levels)
        start = self.run.now()
        params = {"durability": level, "timeout": "2"}
        answer = await self._send("PATCH", node, f"/v1/docs/{doc}", json=body, params=params)
        op = self._record(answer, workload, kind, doc, node, value, start, level, amount)
        return Recorded(op.outcome, str(answer.body.get("state_vector", "")))

    async def _send(
        self,
        method: str,
        node: str,
        path: str,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        answer = Answer()
        try:
            response = await self.http[node].request(method, path, json=json, params=params)
            answer.status = response.status_code
            answer.served_by = response.headers.get("x-meridian-served-by", "")
            if answer.status in (200, 202):
                answer.body = response.json()
        except httpx.ConnectError:
            answer.error = "connect"
        except (httpx.HTTPError, ValueError) as exc:
            answer.error = type(exc).__name__
        return answer

    def _record(
        self,
        answer: Answer,
        workload: str,
        kind: str,
        doc: str,
        node: str,
        value: str,
        start: float,
        level: str,
        amount: int = 0,
    ) -> Op:
        body = answer.body
        incarnation = body.get("incarnation")
        changed, created = body.get("changed"), body.get("created")
        op = Op(value, doc, node, outcome_of(answer.status, answer.error), start, self.run.now(),
                answer.status, level, answer.error, workload, kind, amount,
                incarnation if isinstance(incarnation, int) else None,
                changed if isinstance(changed, bool) else None, answer.served_by,
                created if isinstance(created, bool) else None)  # fmt: skip
        self.run.ops.append(op)
        return op

    async def _read_back(self, node: str, doc: str, value: str, state_vector: str) -> None:
        """Read-your-writes at another node: a 200 must show the element."""
        try:
            response = await self.http[node].get(f"/v1/docs/{doc}", params={"after": state_vector})
        except httpx.HTTPError:
            return  # the node is down or paused: no answer is no violation
        self.run.read_backs += 1
        if response.status_code == 503:
            self.run.read_back_not_reached += 1
        elif response.status_code == 200:
            items = response.json().get("content", {}).get("items", [])
            if value not in items:
                self.run.read_back_violations.append(f"{value} of {doc} not read at {node}")


def _ops(*ops: dict[str, Any]) -> dict[str, Any]:
    """A PATCH body."""
    return {"ops": list(ops)}


@dataclass(frozen=True, slots=True)
class Recorded:
    """A PATCH's outcome, and the state vector its answer named (for a read-back)."""

    outcome: str
    state_vector: str


# -- the final state ---------------------------------------------------------------------


async def read_held(
    http: dict[str, httpx.AsyncClient], docs: list[str], root: str
) -> dict[str, dict[str, Held]]:
    """doc -> holder -> its copy, read from the holder itself (``local=true``); ``root`` is
    the root each copy's :class:`Held` carries. A document never written is left out."""
    any_node = next(iter(http.values()))

    async def holder_copy(doc: str, holder: str) -> Held:
        answer = await http[holder].get(
            f"/v1/docs/{doc}", params={"local": "true", "digest": "true"}
        )
        if answer.status_code == 404:
            code = answer.json().get("error", {}).get("code")
            return Held("deleted" if code == "document_deleted" else "missing")
        answer.raise_for_status()
        body = answer.json()
        return Held("live", body["content"].get(root), body.get("incarnation"), body.get("digest"))

    async def copies(doc: str) -> dict[str, Held] | None:
        placement = await any_node.get(f"/v1/docs/{doc}/placement")
        if placement.status_code == 404:
            return None  # never written
        placement.raise_for_status()
        holders = placement.json()["holders"]
        held = await asyncio.gather(*(holder_copy(doc, holder) for holder in holders))
        return dict(zip(holders, held, strict=True))

    # Every document at once: a poll's reads are as close together in time as they can be.
    read = await asyncio.gather(*(copies(doc) for doc in docs))
    return {doc: held for doc, held in zip(docs, read, strict=True) if held is not None}


async def read_copies(
    http: dict[str, httpx.AsyncClient], docs: list[str]
) -> dict[str, dict[str, Copy]]:
    """The list-append documents' copies: doc -> holder -> its elements."""
    out: dict[str, dict[str, Copy]] = {}
    for doc, holders in (await read_held(http, docs, "items")).items():
        out[doc] = {
            node: Copy(None)
            if held.state != "live"
            else Copy(tuple(str(v) for v in held.root or ()), held.digest)
            for node, held in holders.items()
        }
    return out
