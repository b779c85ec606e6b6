"""``meridian status``: the cluster as its nodes see it, and proof that their copies agree.

Three layers, each usable alone:

- asking (httpx): :func:`ask_nodes` gets ``GET /v1/cluster`` from every node;
  :func:`check_convergence` lists every node's documents (``GET /v1/docs``), asks each
  document's placement once (``GET /v1/docs/{id}/placement``) and compares its holders' own
  copies (``GET /v1/docs/{id}?local=true&digest=true``), a bounded number of documents at a
  time: a document is read on its holders only, never on every node;
- rendering (plain functions of the answers): :func:`render_status`, :func:`render_check`;
- :func:`run_status`, which ``meridian status`` calls, and its exit status: 0 every node
  answered (and, with the check, every document is identical on its holders), 1 some holders'
  copies differ or a holder lacks its copy (under-replicated), 2 some node could not be asked
  (unreachable, or it refused the token).

A node with placement off (``placement.active`` false in its ``/v1/cluster``: an earlier
release, or one held back below peer protocol 3) holds every document, as before placement:
it is a holder of each. A copy on a node that is not a holder (a hint, or a surplus copy being
handed off) is reported but fails nothing, unless no holder has the document.

A node that cannot be reached is a row saying so, never a crash: operators run this when
something is wrong.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TextIO

import httpx

from ..config import ClusterConfig
from .status_members import member_rows, unasked_members

__all__ = [
    "CheckResult",
    "Copy",
    "NodeAnswer",
    "Target",
    "UnderReplicated",
    "ask_nodes",
    "check_convergence",
    "render_check",
    "render_status",
    "run_status",
    "targets_from_config",
    "targets_from_urls",
]

#: Documents listed per request (nodes clamp it to their ``limits.max_list_limit``).
_PAGE = 1000
#: A document whose copies differ (or that a holder lacks) is fetched again after this many
#: seconds before it is reported: a write may still have been on its way to the other nodes.
RECHECK_DELAY = 1.0
#: Differing documents printed at most (``--json`` has them all).
_MAX_PRINTED = 100
#: Ids printed per node of the copies outside their holders (``--json`` has them all).
_MAX_IDS = 10
#: The header naming the node that served an answer: a copy read with ``local=true`` must
#: be the asked node's own.
_SERVED_BY = "x-meridian-served-by"


@dataclass(frozen=True, slots=True)
class Target:
    """A node to ask: its URL, and its id and region when ``regions.toml`` lists it."""

    url: str
    node: str | None = None
    region: str | None = None

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[-1]


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """What one node answered to ``GET /v1/cluster``: its ``view``, or why there is none
    (``unreachable``: no HTTP answer at all; else the node answered with an error)."""

    target: Target
    view: dict[str, Any] | None = None
    error: str | None = None
    unreachable: bool = False

    @property
    def name(self) -> str:
        if self.view is not None:
            return str(self.view["node"])
        return self.target.node or self.target.address

    @property
    def region(self) -> str:
        if self.view is not None:
            return str(self.view["region"])
        return self.target.region or "?"

    @property
    def state(self) -> str:
        if self.view is not None:
            return "up"
        return "unreachable" if self.unreachable else "error"

    @property
    def placement(self) -> dict[str, Any]:
        """The node's ``placement`` summary (``{}`` from a release before placement)."""
        value = (self.view or {}).get("placement")
        return value if isinstance(value, dict) else {}

    @property
    def holds_everything(self) -> bool:
        """Whether placement is off there (an earlier release, or one held back below peer
        protocol 3): the node then holds every document."""
        return self.view is not None and not self.placement.get("active", False)


@dataclass(frozen=True, slots=True)
class Copy:
    """One node's own copy of a document: ``live`` (with its incarnation, digest and state
    vector), ``deleted`` (a tombstone) or ``missing`` (none there)."""

    state: Literal["live", "deleted", "missing"]
    incarnation: int | None = None
    digest: str | None = None
    state_vector: str | None = None

    def describe(self, *, vector: bool = False) -> str:
        if self.state != "live":
            return self.state
        text = f"digest {(self.digest or '')[:16]} (incarnation {self.incarnation})"
        return f"{text}, state vector {self.state_vector}" if vector else text


@dataclass(frozen=True, slots=True)
class UnderReplicated:
    """A document some of whose holders lack their copy: the holders that ``has`` one (live
    or deleted), those that ``lacks`` one, and the other nodes that hold one (``outside``:
    hints, or surplus copies being handed off). ``has`` is empty when only those do."""

    has: tuple[str, ...]
    lacks: tuple[str, ...]
    outside: tuple[str, ...]


@dataclass(slots=True)
class CheckResult:
    """The outcome of :func:`check_convergence`."""

    #: The nodes whose copies were compared.
    nodes: list[str]
    #: Documents compared (every id listed by any of those nodes).
    documents: int = 0
    #: Node -> documents it holds (its listing).
    held: dict[str, int] = field(default_factory=dict)
    #: Node -> its copies compared: of the documents it is a holder of.
    compared: dict[str, int] = field(default_factory=dict)
    #: Document id -> holder -> its copy, for each document whose holders' copies differ.
    differences: dict[str, dict[str, Copy]] = field(default_factory=dict)
    #: Document id -> who has it, for each document some of whose holders lack it.
    under_replicated: dict[str, UnderReplicated] = field(default_factory=dict)
    #: Node -> the documents it holds a copy of without being their holder (hints, surplus
    #: copies being handed off): no failure while a holder has each.
    outside: dict[str, list[str]] = field(default_factory=dict)
    #: Holder that was not asked (``--url`` named others) -> its copies not compared.
    not_asked: dict[str, int] = field(default_factory=dict)
    #: Node -> why it could not be checked (not asked, or it failed during the check).
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def copies(self) -> int:
        """Copies compared, on every node."""
        return sum(self.compared.values())

    @property
    def everywhere(self) -> bool:
        """Whether every node compared holds every document (placement off, or as wide as
        the cluster): then each document was compared on every node."""
        return all(self.compared.get(node, 0) == self.documents for node in self.nodes)

    @property
    def exit_status(self) -> int:
        return 2 if self.failed else 1 if self.differences or self.under_replicated else 0


class _NodeFailed(Exception):
    """A node did not answer a request usefully (no connection, timeout, an error status)."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


# -- targets ---------------------------------------------------------------------------------


def targets_from_config(cluster: ClusterConfig) -> list[Target]:
    """Every node ``regions.toml`` lists, at its listed address."""
    return [Target(f"http://{m.address}", m.node_id, m.region) for m in cluster.members()]


def targets_from_urls(urls: Iterable[str]) -> list[Target]:
    """``http://host:port`` (a bare ``host:port`` gets ``http://``)."""
    return [
        Target((url if "://" in url else f"http://{url}").rstrip("/"))
        for url in urls
        if url.strip()
    ]


# -- asking ----------------------------------------------------------------------------------


def _client(
    target: Target, token: str | None, timeout: float, connections: int
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=target.url,
        headers=headers,
        timeout=timeout,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


async def _get(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> httpx.Response:
    try:
        return await client.get(path, params=params)
    except httpx.TimeoutException as exc:
        raise _NodeFailed(
            f"no answer within the timeout ({type(exc).__name__})", unreachable=True
        ) from exc
    except httpx.ConnectError as exc:
        raise _NodeFailed(f"cannot connect ({exc})", unreachable=True) from exc
    except httpx.TransportError as exc:
        raise _NodeFailed(str(exc) or type(exc).__name__, unreachable=True) from exc


async def _ask(target: Target, token: str | None, timeout: float) -> NodeAnswer:
    async with _client(target, token, timeout, 1) as client:
        try:
            response = await _get(client, "/v1/cluster", {})
        except _NodeFailed as exc:
            return NodeAnswer(target, error=str(exc), unreachable=True)
    if response.status_code != 200:
        return NodeAnswer(target, error=_error_text(response))
    try:
        view = response.json()
    except ValueError:
        view = None
    if not isinstance(view, dict) or not {"node", "region"} <= view.keys():
        return NodeAnswer(target, error="the answer is not a Meridian /v1/cluster view")
    return NodeAnswer(target, view=view)


async def ask_nodes(
    targets: Sequence[Target], *, token: str | None, timeout: float
) -> list[NodeAnswer]:
    """``GET /v1/cluster`` from every target at once; one answer per target, in order."""
    return list(await asyncio.gather(*(_ask(t, token, timeout) for t in targets)))


async def _list_documents(client: httpx.AsyncClient, listed: Callable[[int], None]) -> set[str]:
    ids: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": _PAGE}
        if cursor:
            params["cursor"] = cursor
        response = await _get(client, "/v1/docs", params)
        if response.status_code != 200:
            raise _NodeFailed(f"listing documents: {_error_text(response)}", unreachable=False)
        page = response.json()
        ids.update(d["id"] for d in page["documents"])
        listed(len(page["documents"]))
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def _path(doc_id: str, tail: str = "") -> str:
    return f"/v1/docs/{urllib.parse.quote(doc_id, safe='')}{tail}"


async def _holders(client: httpx.AsyncClient, doc_id: str) -> set[str] | None:
    """``doc_id``'s holders by its placement, as the node sees it; None when it knows no
    placement for the document (404: never written as far as it knows)."""
    response = await _get(client, _path(doc_id, "/placement"), {})
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise _NodeFailed(
            f"reading {doc_id}'s placement: {_error_text(response)}", unreachable=False
        )
    try:
        return {str(holder) for holder in response.json()["holders"]}
    except (ValueError, KeyError, TypeError):
        raise _NodeFailed(
            f"reading {doc_id}'s placement: the answer names no holders", unreachable=False
        ) from None


async def _copy(client: httpx.AsyncClient, doc_id: str, node: str) -> Copy:
    """``node``'s own copy of ``doc_id`` (``local=true``: never a holder's, forwarded)."""
    response = await _get(client, _path(doc_id), {"local": "true", "digest": "true"})
    served_by = response.headers.get(_SERVED_BY)
    if served_by is not None and served_by != node:
        raise _NodeFailed(
            f"reading {doc_id}: {served_by} answered, not {node} from its own copy",
            unreachable=False,
        )
    if response.status_code == 200:
        body = response.json()
        return Copy("live", body["incarnation"], body["digest"], body.get("state_vector"))
    if response.status_code == 404:
        code = response.json().get("error", {}).get("code")
        if code == "document_deleted":
            return Copy("deleted")
        if code == "document_not_found":
            return Copy("missing")
    raise _NodeFailed(f"reading {doc_id}: {_error_text(response)}", unreachable=False)


@dataclass(frozen=True, slots=True)
class _Inspection:
    """One document as the check saw it: its holders' copies, and which other nodes hold
    one (``outside``) or are holders that were not asked (``not_asked``)."""

    copies: dict[str, Copy]
    outside: tuple[str, ...]
    not_asked: tuple[str, ...]

    def without(self, failed: Iterable[str]) -> _Inspection:
        """The same, leaving out the nodes in ``failed``."""
        gone = set(failed)
        return _Inspection(
            {node: copy for node, copy in self.copies.items() if node not in gone},
            tuple(node for node in self.outside if node not in gone),
            self.not_asked,
        )

    @property
    def differ(self) -> bool:
        return len(set(self.copies.values())) > 1

    @property
    def shortfall(self) -> UnderReplicated | None:
        """Under-replicated: a holder lacks its copy while another node holds one."""
        has = tuple(sorted(n for n, copy in self.copies.items() if copy.state != "missing"))
        lacks = tuple(sorted(n for n, copy in self.copies.items() if copy.state == "missing"))
        if not lacks or not (has or self.outside):
            return None
        return UnderReplicated(has, lacks, self.outside)

    @property
    def flagged(self) -> bool:
        return self.differ or self.shortfall is not None


async def check_convergence(
    answers: Sequence[NodeAnswer],
    *,
    token: str | None,
    timeout: float,
    concurrency: int = 16,
    recheck_delay: float = RECHECK_DELAY,
    progress: Callable[[str], None] = lambda text: None,
) -> CheckResult:
    """Compares every document's copies on its holders among the nodes that answered
    (``answers``).

    Lists each node's documents; then, ``concurrency`` documents at a time, asks each listed
    document's holders of one node that knows its placement (one that holds a copy, when
    one does) and reads the holders' own copies (state vector and digest). A node with
    placement off is a holder of every document; a document of which no node knows a
    placement is held by every node. Documents that differ or that a holder lacks are read
    again after ``recheck_delay`` seconds and reported only if they still do. A node that
    fails during the check is left out of the comparison and named in ``failed``.
    """
    result = CheckResult(nodes=[a.name for a in answers if a.view is not None])
    result.failed = {a.name: f"{a.state}: {a.error}" for a in answers if a.view is None}
    reachable = [a for a in answers if a.view is not None]
    clients = {a.name: _client(a.target, token, timeout, concurrency) for a in reachable}
    # Nodes with placement off hold every document; the others know each one's placement.
    everything = {a.name for a in reachable if a.holds_everything}
    placing = [a.name for a in reachable if not a.holds_everything]
    try:
        listed = 0

        def count(n: int) -> None:
            nonlocal listed
            listed += n
            progress(f"listed {listed} documents")

        async def list_one(name: str) -> set[str]:
            try:
                return await _list_documents(clients[name], count)
            except _NodeFailed as exc:
                result.failed[name] = str(exc)
                return set()

        listings = dict(
            zip(clients, await asyncio.gather(*(list_one(name) for name in clients)), strict=True)
        )
        result.held = {name: len(ids) for name, ids in listings.items()}
        ids = sorted(set().union(*listings.values()))
        result.documents = len(ids)

        async def holders_of(doc_id: str) -> set[str]:
            listers = [name for name in placing if doc_id in listings[name]]
            for name in [*listers, *(name for name in placing if name not in listers)]:
                if name in result.failed:
                    continue
                try:
                    placed = await _holders(clients[name], doc_id)
                except _NodeFailed as exc:
                    result.failed.setdefault(name, str(exc))
                    continue
                if placed is not None:
                    return placed | everything
                break  # no record: replication sends the document to every node
            return set(clients)

        async def copy_at(name: str, doc_id: str) -> Copy | None:
            try:
                return await _copy(clients[name], doc_id, name)
            except _NodeFailed as exc:
                result.failed.setdefault(name, str(exc))
                return None

        async def inspect(doc_id: str) -> _Inspection:
            holders = await holders_of(doc_id)
            names = [name for name in clients if name in holders and name not in result.failed]
            copies = await asyncio.gather(*(copy_at(name, doc_id) for name in names))
            return _Inspection(
                {n: c for n, c in zip(names, copies, strict=True) if c is not None},
                tuple(sorted(n for n in clients if n not in holders and doc_id in listings[n])),
                tuple(sorted(holders - set(clients) - set(result.failed))),
            )

        async def inspect_each(
            doc_ids: Iterable[str], done: Callable[[str, _Inspection], None]
        ) -> None:
            pending = iter(doc_ids)

            async def worker() -> None:
                for doc_id in pending:  # shared: each document goes to one worker
                    done(doc_id, await inspect(doc_id))

            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))

        def tally(doc_id: str, inspection: _Inspection) -> None:
            for name in inspection.copies:
                result.compared[name] = result.compared.get(name, 0) + 1
            for name in inspection.outside:
                result.outside.setdefault(name, []).append(doc_id)
            for name in inspection.not_asked:
                result.not_asked[name] = result.not_asked.get(name, 0) + 1

        flagged: dict[str, _Inspection] = {}
        checked = 0

        def first(doc_id: str, inspection: _Inspection) -> None:
            nonlocal checked
            if inspection.flagged:
                flagged[doc_id] = inspection
            else:
                tally(doc_id, inspection)
            checked += 1
            progress(f"checked {checked}/{len(ids)} documents")

        await inspect_each(ids, first)
        if flagged and recheck_delay > 0:
            await asyncio.sleep(recheck_delay)
            again: dict[str, _Inspection] = {}
            await inspect_each(sorted(flagged), again.__setitem__)
            flagged = again
        # Compare only the nodes that answered throughout.
        for doc_id in sorted(flagged):
            inspection = flagged[doc_id].without(result.failed)
            tally(doc_id, inspection)
            if inspection.differ:
                result.differences[doc_id] = inspection.copies
            shortfall = inspection.shortfall
            if shortfall is not None:
                result.under_replicated[doc_id] = shortfall
        for name in result.failed:
            result.held.pop(name, None)
            result.compared.pop(name, None)
            result.outside.pop(name, None)
        result.outside = {name: sorted(docs) for name, docs in sorted(result.outside.items())}
        result.nodes = sorted(name for name in result.nodes if name not in result.failed)
        return result
    finally:
        await asyncio.gather(*(client.aclose() for client in clients.values()))


# -- rendering -------------------------------------------------------------------------------


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()
) -> list[str]:
    """Columns two spaces apart; the ``right`` columns (numbers) aligned right."""
    aligned = set(right)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in aligned else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits:
        return f"{float(value):.{digits}f}"
    return str(value)


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _node_rows(answers: Sequence[NodeAnswer]) -> list[list[str]]:
    rows: list[tuple[str, str, list[str]]] = []
    asked = {a.name for a in answers}
    for answer in answers:
        documents = answer.view["documents"] if answer.view is not None else {}
        placement = answer.placement
        rows.append(
            (
                answer.region,
                answer.name,
                [
                    answer.region,
                    answer.name,
                    answer.target.address,
                    answer.state,
                    _number(documents.get("live")),
                    _number(documents.get("tombstones")),
                    _number(documents.get("hot")),
                    _number(placement.get("hints")),
                    _number((placement.get("handoff") or {}).get("pending")),
                    _number((placement.get("handoff") or {}).get("pulls_pending")),
                ],
            )
        )
    # Nodes the answering ones know of but nobody asked (``--url`` names only some).
    for answer in answers:
        for node in (answer.view or {}).get("nodes", []):
            if node["id"] not in asked:
                asked.add(node["id"])
                region = node["region"]
                rows.append(
                    (region, node["id"], [region, node["id"], "-", "not asked", *["-"] * 6])
                )
    return [cells for _, _, cells in sorted(rows, key=lambda r: (r[0], r[1]))]


def _link_rows(answers: Sequence[NodeAnswer], now: float) -> list[list[str]]:
    rows = []
    for answer in sorted(answers, key=lambda a: a.name):
        for peer in (answer.view or {}).get("peers", []):
            buffered = peer.get("buffered", {})
            ae = peer.get("anti_entropy", {})
            last = "never"
            if ae.get("rounds"):
                last = (
                    f"{_ago(ae.get('last_at'), now)}, checked {ae.get('last_checked', 0)}, "
                    f"repaired {ae.get('last_repaired', 0)}"
                )
                if ae.get("failures"):
                    last += f", {ae['failures']} failed"
            rows.append(
                [
                    answer.name,
                    str(peer["node"]),
                    str(peer["state"]),
                    _number(peer.get("rtt_ms") if peer["state"] == "up" else None, 1),
                    _number(peer.get("lag_seconds"), 1),
                    _number(buffered.get("deltas")),
                    _number(buffered.get("in_flight")),
                    last,
                    "" if peer["state"] == "up" else str(peer.get("last_error") or ""),
                ]
            )
    return rows


def render_status(answers: Sequence[NodeAnswer], *, now: float) -> list[str]:
    """The nodes table, then the links table, then why each missing node is missing."""
    up = [a for a in answers if a.view is not None]
    cluster = up[0].view["cluster"] if up and up[0].view is not None else "?"
    regions = sorted({a.region for a in answers} - {"?"})
    down = len(answers) - len(up)
    lines = [
        f"cluster {cluster}: {len(regions)} regions, {len(answers)} nodes asked, "
        f"{len(up)} up" + (f", {down} not answering" if down else ""),
        "",
        *_table(
            [
                "REGION",
                "NODE",
                "ADDRESS",
                "STATE",
                "LIVE",
                "TOMBSTONES",
                "HOT",
                "HINTS",
                "HANDOFF",
                "TO PULL",
            ],
            _node_rows(answers),
            right=(4, 5, 6, 7, 8, 9),
        ),
    ]
    everything = sorted(a.name for a in up if a.holds_everything)
    if everything:
        lines.append(
            f"{', '.join(everything)}: placement off (an earlier release, or held back below "
            "peer protocol 3): holds every document"
        )
    links = _link_rows(answers, now)
    if links:
        lines += [
            "",
            "links, as each node sees them:",
            *_table(
                [
                    "FROM",
                    "TO",
                    "STATE",
                    "RTT MS",
                    "LAG S",
                    "BUFFERED",
                    "IN FLIGHT",
                    "LAST ANTI-ENTROPY",
                    "ERROR",
                ],
                links,
                right=(3, 4, 5, 6),
            ),
        ]
    changing = member_rows(answers)
    if changing:
        lines += [
            "",
            "members that are not active (joining, leaving, removed):",
            *_table(["MEMBER", "REGION", "ADDRESS", "STATE", "INCARNATION"], changing, right=(4,)),
        ]
    problems = [a for a in answers if a.view is None]
    if problems:
        lines.append("")
        lines += [f"{a.name} ({a.target.url}): {a.state}: {a.error}" for a in problems]
    return lines


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_IDS])
    return shown + (f" and {len(ids) - _MAX_IDS} more" if len(ids) > _MAX_IDS else "")


def render_check(result: CheckResult) -> list[str]:
    """The check's summary, or each document that differs and what each holder holds; the
    documents under-replicated, the copies outside their holders, the nodes not checked."""
    nodes = _plural(len(result.nodes), "node", "nodes")
    names = ", ".join(result.nodes)
    lines = []
    if len(result.nodes) < 2 and result.failed:
        names = f" ({names})" if result.nodes else ""
        lines.append(f"check: nothing to compare: only {nodes} answered{names}")
    elif not result.differences and not result.under_replicated:
        where = (
            f"on {nodes} ({names})"
            if result.everywhere
            else f"on their holders ({_plural(result.copies, 'copy', 'copies')} on {nodes}: "
            f"{names})"
        )
        lines.append(f"check: {result.documents} documents identical {where}")
    if result.differences:
        each = "" if result.everywhere else ", each on its holders"
        lines.append(
            f"check: {len(result.differences)} of {result.documents} documents differ "
            f"between {nodes} ({names}){each}:"
        )
        for doc_id in list(result.differences)[:_MAX_PRINTED]:
            copies = result.differences[doc_id]
            # Same content, different state vectors: show the vectors.
            live = {copy.digest for copy in copies.values() if copy.state == "live"}
            vector = len(live) == 1 and all(copy.state == "live" for copy in copies.values())
            lines.append(f"  {doc_id}")
            lines += [f"    {n}: {copies[n].describe(vector=vector)}" for n in sorted(copies)]
        if len(result.differences) > _MAX_PRINTED:
            lines.append(
                f"  ... and {len(result.differences) - _MAX_PRINTED} more (--json lists them all)"
            )
    if result.under_replicated:
        lines.append(
            ("" if result.differences else "check: ")
            + f"{len(result.under_replicated)} of {result.documents} documents "
            "under-replicated: some of their holders lack a copy:"
        )
        for doc_id in list(result.under_replicated)[:_MAX_PRINTED]:
            short = result.under_replicated[doc_id]
            held = f"on {', '.join(short.has)}" if short.has else "on none of its holders"
            text = f"  {doc_id}: {held}; missing on {', '.join(short.lacks)}"
            if short.outside:
                text += f"; outside its holders on {', '.join(short.outside)}"
            lines.append(text)
        if len(result.under_replicated) > _MAX_PRINTED:
            more = len(result.under_replicated) - _MAX_PRINTED
            lines.append(f"  ... and {more} more (--json lists them all)")
    outside = sum(len(ids) for ids in result.outside.values())
    if outside:
        lines.append(
            f"{_plural(outside, 'copy', 'copies')} outside {'its' if outside == 1 else 'their'} "
            "holders, being handed off (hints, surplus copies):"
        )
        lines += [f"  {node}: {_ids(ids)}" for node, ids in result.outside.items()]
    if result.not_asked:
        lines.append(
            "not compared: copies on holders not asked: "
            + ", ".join(f"{n} ({result.not_asked[n]})" for n in sorted(result.not_asked))
        )
    if result.failed:
        lines.append("check incomplete: these nodes could not be checked:")
        lines += [f"  {node}: {why}" for node, why in sorted(result.failed.items())]
    return lines


def _json(answers: Sequence[NodeAnswer], result: CheckResult | None, status: int) -> str:
    document: dict[str, Any] = {
        "status": status,
        "nodes": [
            {
                "node": a.name,
                "region": a.region,
                "url": a.target.url,
                "state": a.state,
                "error": a.error,
                "holds_everything": a.holds_everything,
                "hints": a.placement.get("hints"),
                "handoff_pending": (a.placement.get("handoff") or {}).get("pending"),
                "pulls_pending": (a.placement.get("handoff") or {}).get("pulls_pending"),
                "cluster": a.view,
            }
            for a in answers
        ],
        "check": None,
    }
    if result is not None:
        bad = result.differences.keys() | result.under_replicated.keys()
        document["check"] = {
            "nodes": result.nodes,
            "documents": result.documents,
            "identical": result.documents - len(bad),
            "copies": result.copies,
            "held": result.held,
            "compared": result.compared,
            "differences": [
                {"id": doc_id, "copies": {n: asdict(c) for n, c in copies.items()}}
                for doc_id, copies in result.differences.items()
            ],
            "under_replicated": [
                {"id": doc_id, **asdict(short)} for doc_id, short in result.under_replicated.items()
            ],
            "outside": result.outside,
            "not_asked": result.not_asked,
            "failed": result.failed,
        }
    return json.dumps(document, indent=2)


class _Progress:
    """Progress lines on a stream: rewritten in place on a terminal, else at most one a
    second (and the last one)."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self.last = 0.0
        self.pending = ""

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        self.pending = text
        now = time.monotonic()
        if now - self.last >= (0.1 if self.tty else 1.0):
            self.last = now
            self._write(text)
            self.pending = ""

    def _write(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = ""
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


def run_status(
    targets: Sequence[Target],
    *,
    token: str | None,
    check: bool = False,
    as_json: bool = False,
    progress: bool | None = None,
    timeout: float = 5.0,
    concurrency: int = 16,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Asks ``targets``, prints the status (and the check) to ``out``; returns the exit
    status. ``progress`` None: shown when ``err`` is a terminal."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    reporter = _Progress(err, enabled=err.isatty() if progress is None else progress)

    async def run() -> tuple[list[NodeAnswer], CheckResult | None]:
        answers = await ask_nodes(targets, token=token, timeout=timeout)
        joined = unasked_members(answers)
        if joined:
            answers += await ask_nodes(joined, token=token, timeout=timeout)
        if not check:
            return answers, None
        try:
            result = await check_convergence(
                answers,
                token=token,
                timeout=timeout,
                concurrency=concurrency,
                progress=reporter,
            )
        finally:
            reporter.close()
        return answers, result

    answers, result = asyncio.run(run())
    status = result.exit_status if result is not None else 0
    if any(a.view is None for a in answers):
        status = 2
    if as_json:
        print(_json(answers, result, status), file=out, flush=True)
        return status
    lines = render_status(answers, now=time.time())
    if result is not None:
        lines += ["", *render_check(result)]
    print("\n".join(lines), file=out, flush=True)
    return status
