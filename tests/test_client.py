"""The Python client (:mod:`app.client`): its failover rules and its choice of a document's
node against fake nodes (httpx's MockTransport), then against real node processes — the
nearest node and failover when it is killed, read-your-writes across a failover, requests
going straight to a document's holder and falling back when it dies, a live document that
keeps its edits while its node is down, errors and access tokens."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pycrdt
import pytest

from app.auth import create_token
from app.client import MeridianClient, MeridianError, NoNodeAvailable, OutcomeUnknown
from app.client import client as client_module
from crdt import decode_state_vector, encode_state_vector

from .cluster import Cluster, free_port
from .support import TIMEOUT_FACTOR, NodeProcess, wait_for

TIMEOUT = 30
APPEND_TEA = [{"op": "append", "path": ["items"], "values": ["tea"]}]


def b64_state(clocks: dict[int, int]) -> str:
    return base64.b64encode(encode_state_vector(clocks)).decode()


# -- failover rules, against fake nodes ------------------------------------------------------


class FakeNodes:
    """Nodes ``a``, ``b`` and ``c`` behind one MockTransport. Health probes always answer; the
    first node a document request reaches answers with ``first``, the others with 200."""

    def __init__(self, first: Callable[[httpx.Request], httpx.Response]) -> None:
        self.first = first
        #: (host, method, path) of every document request, in order.
        self.requests: list[tuple[str, str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            return httpx.Response(200, json={"status": "ok"})
        self.requests.append((request.url.host, request.method, request.url.path))
        if request.url.host == self.requests[0][0]:
            return self.first(request)
        return httpx.Response(200, json={"id": "x", "state_vector": "AA==", "incarnation": 1})

    def client(self, **options: Any) -> MeridianClient:
        urls = ["http://a", "http://b", "http://c"]
        return MeridianClient(urls, transport=httpx.MockTransport(self), **options)

    def hosts(self) -> list[str]:
        return [host for host, _, _ in self.requests]


def _raise(kind: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def fail(request: httpx.Request) -> httpx.Response:
        raise kind("the node failed", request=request)

    return fail


def _answer(status: int, code: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json={"error": {"code": code, "message": "why"}})


@pytest.mark.parametrize(
    "first",
    [
        _raise(httpx.ConnectError),
        _raise(httpx.ReadTimeout),
        _raise(httpx.RemoteProtocolError),
        _answer(500, "internal_error"),
        _answer(503, "storage_unavailable"),
        _answer(503, "after_not_reached"),
    ],
)
def test_reads_and_updates_fail_over_to_the_next_node(
    first: Callable[[httpx.Request], httpx.Response],
) -> None:
    fake = FakeNodes(first)
    with fake.client() as client:
        assert client.get("x")["id"] == "x"
        failed, answered = fake.hosts()
        assert failed != answered and client.node == f"http://{answered}"
        client.post_update("x", b"\x00\x00")
        assert fake.hosts()[-1] != failed


@pytest.mark.parametrize(("status", "code"), [(400, "invalid_update"), (404, "document_not_found")])
def test_an_error_answer_is_raised_and_not_retried(status: int, code: str) -> None:
    fake = FakeNodes(_answer(status, code))
    with fake.client() as client, pytest.raises(MeridianError) as raised:
        client.get("x")
    assert (raised.value.status, raised.value.code, raised.value.message) == (status, code, "why")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_a_patch_is_not_repeated_when_its_node_may_have_applied_it(
    failure: type[httpx.TransportError],
) -> None:
    fake = FakeNodes(_raise(failure))
    with fake.client() as client, pytest.raises(OutcomeUnknown):
        client.patch("x", APPEND_TEA)
    assert len(fake.requests) == 1  # repeating it could append the tea twice


def test_a_patch_that_never_reached_its_node_goes_to_the_next() -> None:
    fake = FakeNodes(_raise(httpx.ConnectError))
    with fake.client() as client:
        client.patch("x", APPEND_TEA)
    assert len(set(fake.hosts())) == 2


def test_when_no_node_answers_the_error_names_each_one() -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with (
        MeridianClient(urls, connect_timeout=1) as client,
        pytest.raises(NoNodeAvailable) as raised,
    ):
        client.get("x")
    assert set(raised.value.failures) == set(urls) and raised.value.status is None
    assert "ConnectError" in str(raised.value)


def test_a_failed_node_is_tried_last_then_probed_again_after_retry_after() -> None:
    now = [0.0]
    fake = FakeNodes(_raise(httpx.ConnectError))
    probes: list[str] = []

    def transport(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            probes.append(request.url.host)
        return fake(request)

    urls = ["http://a", "http://b", "http://c"]
    with MeridianClient(
        urls, transport=httpx.MockTransport(transport), retry_after=30, clock=lambda: now[0]
    ) as client:
        client.get("x")
        failed = fake.hosts()[0]
        assert sorted(probes) == ["a", "b", "c"]
        client.get("x")
        assert fake.hosts()[-1] != failed and len(probes) == 3  # not probed, not tried first
        now[0] = 31.0
        client.get("x")
        assert probes[3:] == [failed]  # due again: probed (healthy, so ranked by round trip)


def test_reads_ask_for_the_newest_state_the_client_wrote_or_read() -> None:
    answers = [
        {"state_vector": b64_state({1: 5}), "incarnation": 1},  # patch
        {"state_vector": b64_state({2: 3}), "incarnation": 1},  # post_update
        {"state_vector": b64_state({1: 7}), "incarnation": 1},  # get
        {"state_vector": b64_state({1: 7}), "incarnation": 1},  # get
        {"state_vector": b64_state({9: 1}), "incarnation": 2},  # patch: a newer incarnation
        {"state_vector": b64_state({9: 1}), "incarnation": 2},  # get
        {"id": "doc", "deleted": True, "incarnation": 2},  # delete
        {"state_vector": b64_state({}), "incarnation": 3},  # get
    ]
    sent: list[dict[str, str]] = []
    tokens: set[str | None] = set()

    def transport(request: httpx.Request) -> httpx.Response:
        tokens.add(request.headers.get("Authorization"))
        if request.url.path == "/v1/health":
            return httpx.Response(200, json={"status": "ok"})
        sent.append(dict(request.url.params))
        return httpx.Response(200, json=answers[len(sent) - 1])

    with MeridianClient(["http://a"], token="t0k", transport=httpx.MockTransport(transport)) as c:
        c.patch("doc", APPEND_TEA)
        c.post_update("doc", b"\x00\x00", durability="all")
        c.get("doc")
        c.get("doc")
        c.patch("doc", APPEND_TEA)
        c.get("doc")
        c.delete("doc")
        c.get("doc")

    def after(params: dict[str, str]) -> dict[int, int] | None:
        return decode_state_vector(base64.b64decode(params["after"])) if "after" in params else None

    # Only reads carry after=: the newest state written or read, reset by a new incarnation.
    afters = [after(params) for params in sent]
    assert afters == [None, None, {1: 5, 2: 3}, {1: 7, 2: 3}, None, {9: 1}, None, None]
    assert sent[1]["durability"] == "all"
    assert tokens == {"Bearer t0k"}


# -- a document's node, against fake nodes with placement -----------------------------------


class PlacedNodes:
    """Nodes ``a`` and ``b`` of region ``near`` and ``c`` of ``far`` (ids ``a-1``, ...) behind
    one MockTransport, ``a`` the nearest (the others' health probes take 50 and 100 ms). ``b``
    and ``c`` hold every document; ``a`` forwards to the first of them that is up and names it
    in ``X-Meridian-Served-By``, as a node does. A host in ``failing`` answers with its
    function (its health probes too). Documents whose id starts with ``elsewhere`` are served
    by a node the client does not know."""

    DELAYS: ClassVar[dict[str, float]] = {"a": 0.0, "b": 0.05, "c": 0.1}
    REGIONS: ClassVar[dict[str, str]] = {"a": "near", "b": "near", "c": "far"}

    def __init__(self) -> None:
        self.failing: dict[str, Callable[[httpx.Request], httpx.Response]] = {}
        #: Every document request, in order.
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.url.path != "/v1/health":
            self.requests.append(request)
        if host in self.failing:
            return self.failing[host](request)
        if request.url.path == "/v1/health":
            time.sleep(self.DELAYS[host])  # the node's distance, which ranks it
            return httpx.Response(200, json={"node": f"{host}-1", "region": self.REGIONS[host]})
        served_by = host if host != "a" else next(h for h in "bc" if h not in self.failing)
        if "/elsewhere" in request.url.path:
            served_by = "z"
        state = b64_state({7: len(self.requests)})
        return httpx.Response(
            200,
            json={"id": "x", "state_vector": state, "incarnation": 1},
            headers={"X-Meridian-Served-By": f"{served_by}-1", "X-State-Vector": state},
        )

    def hosts(self) -> list[str]:
        return [request.url.host for request in self.requests]

    def after(self, index: int) -> dict[int, int] | None:
        """The after= state the ``index``-th document request carried, if any."""
        after = self.requests[index].url.params.get("after")
        return None if after is None else decode_state_vector(base64.b64decode(after))


@pytest.mark.parametrize(
    "failure",
    [_raise(httpx.ConnectError), _raise(httpx.ReadTimeout), _answer(500, "internal_error")],
)
def test_a_documents_requests_go_to_the_node_that_served_it_until_it_fails(
    failure: Callable[[httpx.Request], httpx.Response],
) -> None:
    fake, now = PlacedNodes(), [0.0]
    urls = ["http://a", "http://b", "http://c"]
    with MeridianClient(
        urls, transport=httpx.MockTransport(fake), retry_after=30, clock=lambda: now[0]
    ) as client:
        client.patch("x", APPEND_TEA)  # a forwards it to b
        client.get("x")
        client.get_update("x")
        client.post_update("x", b"\x00\x00")
        assert fake.hosts() == ["a", "b", "b", "b"] and client.node == "http://b"

        fake.failing["b"] = failure
        client.get("x")  # b fails: the nearest, a, answers (from c) with what the client saw
        assert fake.hosts()[4:] == ["b", "a"] and client.node == "http://a"
        assert fake.after(5) == {7: 4}
        client.get("x")  # c is in another region: still through a
        client.delete("x")
        assert fake.hosts()[6:] == ["a", "a"] and fake.after(6) == {7: 6}

        del fake.failing["b"]
        now[0] = 31.0  # b is probed again and answers: the nearest node decides again
        client.get("x")
        client.get("x")
        assert fake.hosts()[8:] == ["a", "b"] and client.node == "http://b"


def test_a_node_the_client_does_not_know_is_not_preferred() -> None:
    fake = PlacedNodes()
    with MeridianClient(["http://a", "http://b"], transport=httpx.MockTransport(fake)) as client:
        client.get("elsewhere")  # served by z-1
        client.get("elsewhere")
        client.get("x")  # served by b-1, through a
        client.get("x")
    assert fake.hosts() == ["a", "a", "a", "b"]


def test_the_client_remembers_the_node_of_the_documents_used_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "_PREFERRED_MAX", 2)
    fake = PlacedNodes()
    with MeridianClient(["http://a", "http://b"], transport=httpx.MockTransport(fake)) as client:
        for doc_id in ("d0", "d1", "d2"):
            client.get(doc_id)  # through a: each learns its node, b; d0 is dropped
        client.get("d1")  # used: kept
        client.get("d0")  # through a again, learnt again: d2, used least recently, is dropped
        client.get("d1")
        client.get("d2")
    assert fake.hosts() == ["a", "a", "a", "b", "a", "b", "a"]


# -- real nodes ------------------------------------------------------------------------------


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1, "ap-south": 1}, latency_ms=20).start()
    try:
        cluster.wait_links_up()
        yield cluster
    finally:
        cluster.close()


def content(cluster: Cluster, node_id: str, doc_id: str) -> Any:
    """The JSON content of ``doc_id`` at ``node_id`` (read directly, without after=)."""
    with cluster[node_id].client() as http:
        response = http.get(f"/v1/docs/{doc_id}")
        return response.json()["content"] if response.status_code == 200 else None


def test_the_nearest_node_answers_and_the_next_nearest_when_it_is_killed(
    regions: Cluster,
) -> None:
    # The client reaches each node through a link of its own latency (one way, in ms).
    urls = {}
    for node_id, latency in [("us-east-1", 120), ("eu-west-1", 0), ("ap-south-1", 60)]:
        link = regions.wan.wan.add_link(
            "client", regions[node_id].region, ("127.0.0.1", regions[node_id].port), latency
        )
        urls[node_id] = "http://{}:{}".format(*regions.wan.call(link).address)
    with MeridianClient(list(urls.values())) as client:
        assert client.probe() == [urls["eu-west-1"], urls["ap-south-1"], urls["us-east-1"]]
        assert client.patch("cart", APPEND_TEA, durability="all")["durability"] == "all"
        assert client.node == urls["eu-west-1"]
        regions.kill("eu-west-1")
        assert client.get("cart")["content"] == {"items": ["tea"]}
        assert client.node == urls["ap-south-1"]
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(client.get_update("cart"))
        before = doc.get_state()
        doc.get("items", type=pycrdt.Array).append("milk")
        client.post_update("cart", doc.get_update(before))
        assert client.node == urls["ap-south-1"]
        assert client.list("ca") == ["cart"]
    wait_for(
        lambda: content(regions, "us-east-1", "cart") == {"items": ["tea", "milk"]},
        timeout=TIMEOUT,
        what="the update to reach us-east-1",
    )


def test_a_read_after_failover_includes_what_the_client_wrote(regions: Cluster) -> None:
    # The client knows two nodes, A (the nearer) and B. B is cut off while the client writes
    # on A (and C, for the quorum); A dies; B comes back, the client reads from B at once.
    with MeridianClient([regions["us-east-1"].url, regions["eu-west-1"].url]) as client:
        by_url = {member.url: member for member in regions.members.values()}
        a, b = (by_url[url] for url in client.probe())
        c = regions["ap-south-1"]
        regions.wan.do(lambda: regions.wan.wan.isolate(b.region))
        written = client.patch("notes", APPEND_TEA, durability="quorum")
        assert written["durability"] == "quorum" and b.node_id not in written["durable_on"]
        assert content(regions, b.node_id, "notes") is None  # B has never seen it
        regions.kill(a.node_id)
        regions.wan.do(lambda: regions.wan.wan.rejoin(b.region))
        # Right away: B answers once its copy includes the write (after=), fetched from C.
        assert client.get("notes")["content"] == {"items": ["tea"]}
        assert client.node == b.url
    assert content(regions, c.node_id, "notes") == {"items": ["tea"]}


def document_requests(cluster: Cluster, node_id: str) -> tuple[float, float]:
    """How many document requests ``node_id`` answered, and how many it forwarded (its
    /metrics)."""
    with cluster[node_id].client() as http:
        metrics = http.get("/metrics").text
    counts = {"meridian_http_requests_total": 0.0, "meridian_forwarded_requests_total": 0.0}
    for line in metrics.splitlines():
        name, _, rest = line.partition("{")
        if name in counts and 'route="/v1/docs/{doc_id}' in rest:
            counts[name] += float(line.rsplit(" ", 1)[1])
    return counts["meridian_http_requests_total"], counts["meridian_forwarded_requests_total"]


def test_requests_go_straight_to_a_holder_then_fall_back_when_it_dies(tmp_path: Path) -> None:
    layout = {"us-east": 2, "eu-west": 1, "ap-south": 1}
    placement = {"replicas": 2, "nodes_per_region": 1}
    cluster = Cluster(tmp_path, layout, latency_ms=5, placement=placement).start()
    try:
        cluster.wait_links_up()
        # "cart" lives in us-east and eu-west: on one us-east node, and on eu-west-1.
        with cluster["us-east-1"].client() as http:
            placed = http.put("/v1/docs/cart/placement", json={"regions": ["us-east", "eu-west"]})
            assert placed.status_code == 200, placed.text
        holders = placed.json()["holders"]
        (holder,) = set(holders) - {"eu-west-1"}
        (nearest,) = {"us-east-1", "us-east-2"} - {holder}  # the client's, holding nothing

        def placed_everywhere() -> bool:
            for member in cluster.members.values():
                with member.client() as http:
                    answer = http.get("/v1/docs/cart/placement")
                    if answer.status_code != 200 or answer.json()["holders"] != holders:
                        return False
            return True

        wait_for(placed_everywhere, timeout=TIMEOUT, what="every node to know where cart lives")
        # The client reaches each node through a link of its own latency (one way, in ms).
        urls = {}
        for node_id, latency in [(nearest, 0), (holder, 20), ("eu-west-1", 40), ("ap-south-1", 60)]:
            link = cluster.wan.wan.add_link(
                "client", cluster[node_id].region, ("127.0.0.1", cluster[node_id].port), latency
            )
            urls[node_id] = "http://{}:{}".format(*cluster.wan.call(link).address)
        items = ["tea"]
        with MeridianClient(list(urls.values())) as client:
            assert client.probe()[0] == urls[nearest]
            client.patch("cart", APPEND_TEA, durability="all")  # on both holders
            assert client.node == urls[nearest]  # which forwarded it to the holder
            at_nearest = document_requests(cluster, nearest)

            # Every request for cart now goes straight to the holder, live ones included.
            assert client.get("cart")["content"] == {"items": items}
            assert client.node == urls[holder]
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.apply_update(client.get_update("cart"))
            before = doc.get_state()
            doc.get("items", type=pycrdt.Array).append("milk")
            client.post_update("cart", doc.get_update(before), durability="all")
            jam = [{"op": "append", "path": ["items"], "values": ["jam"]}]
            client.patch("cart", jam, durability="all")
            items += ["milk", "jam"]
            assert client.node == urls[holder]

            async def live() -> None:
                async with client.live("cart") as cart:
                    await asyncio.wait_for(cart.wait_synced(), TIMEOUT * TIMEOUT_FACTOR)
                    assert cart.node == urls[holder]
                    assert cart.doc.get("items", type=pycrdt.Array).to_py() == items

            asyncio.run(live())
            assert document_requests(cluster, nearest) == at_nearest

            # The holder dies: the nearest node answers again, from eu-west-1, with everything
            # the client wrote; and keeps answering, eu-west-1 being in another region (the
            # reads it forwards count toward a follower copy in us-east).
            cluster.kill(holder)
            assert client.get("cart")["content"] == {"items": items}
            assert client.node == urls[nearest]
            assert client.get("cart")["content"] == {"items": items}
            assert client.node == urls[nearest]
            answered, forwarded = document_requests(cluster, nearest)
            assert (answered, forwarded) == (at_nearest[0] + 2, at_nearest[1] + 2)
    finally:
        cluster.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Polls ``condition`` (state of this event loop) until true, for TIMEOUT seconds."""
    try:
        async with asyncio.timeout(TIMEOUT * TIMEOUT_FACTOR):
            while not condition():  # noqa: ASYNC110 - the state changes in other tasks
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def until_served(cluster: Cluster, node_id: str, doc_id: str, expected: Any) -> None:
    """Waits (in a thread: HTTP calls block) until ``node_id`` serves ``expected``."""
    await asyncio.to_thread(
        wait_for,
        lambda: content(cluster, node_id, doc_id) == expected,
        timeout=TIMEOUT,
        what=f"{node_id} to serve {expected}",
    )


def test_a_live_document_keeps_its_edits_while_offline_and_merges_them_elsewhere(
    tmp_path: Path,
) -> None:
    layout = {"us-east": 1, "eu-west": 1, "ap-south": 1}
    cluster = Cluster(tmp_path, layout, latency_ms=20).start(skip=("eu-west-1",))
    try:
        cluster.wait_links_up()
        # The client knows us-east-1 and eu-west-1, which is not running yet.
        client = MeridianClient([cluster["us-east-1"].url, cluster["eu-west-1"].url])

        def write_meanwhile() -> None:
            with cluster["ap-south-1"].client() as http:
                ops = [{"op": "set", "path": ["settings", "by"], "value": "c"}]
                assert http.patch("/v1/docs/board", json={"ops": ops}).status_code == 200

        async def scenario() -> None:
            async with client.live("board") as live:
                await asyncio.wait_for(live.wait_synced(), TIMEOUT * TIMEOUT_FACTOR)
                assert live.node == cluster["us-east-1"].url
                body = live.doc.get("body", type=pycrdt.Text)
                body += "online;"
                await until_served(cluster, "ap-south-1", "board", {"body": "online;"})

                await asyncio.to_thread(cluster.kill, "us-east-1")
                await until(lambda: not live.connected, "the live document to notice")
                body += "offline;"  # kept in live.doc: no node to send it to
                live.doc.get("settings", type=pycrdt.Map)["mode"] = "offline"
                await asyncio.to_thread(write_meanwhile)  # on ap-south-1, unknown to the client
                assert not live.connected

                await asyncio.to_thread(cluster.start_node, "eu-west-1")
                await asyncio.wait_for(live.wait_synced(), TIMEOUT * TIMEOUT_FACTOR)
                assert live.node == cluster["eu-west-1"].url
                expected = {"body": "online;offline;", "settings": {"mode": "offline", "by": "c"}}
                for node_id in ("eu-west-1", "ap-south-1"):
                    await until_served(cluster, node_id, "board", expected)
                settings = live.doc.get("settings", type=pycrdt.Map)
                await until(lambda: settings.get("by") == "c", "the write made meanwhile")

        with client:
            asyncio.run(scenario())
    finally:
        cluster.close()


def test_error_answers_of_a_real_node(node_process: NodeProcess) -> None:
    with MeridianClient([node_process.url]) as client:
        client.patch("notes", [{"op": "set", "path": ["settings", "theme"], "value": "dark"}])
        text_op = {"op": "insert_text", "path": ["settings"], "index": 0, "text": "x"}
        cases: list[tuple[Callable[[], Any], int, str]] = [
            (lambda: client.get("missing"), 404, "document_not_found"),
            (lambda: client.get_update("bad id!"), 400, "invalid_document_id"),
            (lambda: client.post_update("notes", b"\xff\x01garbage"), 400, "invalid_update"),
            (lambda: client.patch("notes", [text_op]), 422, "invalid_operation"),
            (
                lambda: client.patch("notes", APPEND_TEA, durability="region"),
                422,
                "durability_unavailable",  # a one-node region without peers
            ),
        ]
        for call, status, code in cases:
            with pytest.raises(MeridianError) as raised:
                call()
            assert (raised.value.status, raised.value.code) == (status, code), raised.value
            assert raised.value.message and client.node == node_process.url
        client.delete("notes")
        with pytest.raises(MeridianError, match="document_deleted"):
            client.get("notes")
        with pytest.raises(MeridianError) as raised:
            client.delete("notes")
        assert raised.value.status == 404
        assert client.list() == []


def test_a_token_goes_with_http_calls_and_live_documents(tmp_path: Path) -> None:
    config = tmp_path / "regions.toml"
    config.write_text(
        '[cluster]\nname = "client-test"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n[auth]\n'
    )
    node = NodeProcess(
        tmp_path / "node", config=config, env={"MERIDIAN_CLUSTER_SECRET": "s3cret"}
    ).start()
    token = create_token(b"s3cret", prefix="team:", rights=["read", "write"], ttl_seconds=600)
    try:
        with MeridianClient([node.url]) as anonymous, pytest.raises(MeridianError) as raised:
            anonymous.get("team:notes")
        assert (raised.value.status, raised.value.code) == (401, "missing_token")
        with MeridianClient([node.url], token=token) as client:
            client.patch("team:notes", APPEND_TEA)
            assert client.get("team:notes")["content"] == {"items": ["tea"]}
            assert client.list() == ["team:notes"]
            with pytest.raises(MeridianError) as raised:
                client.get("other")
            assert (raised.value.status, raised.value.code) == (403, "forbidden")

            async def live() -> None:
                async with client.live("team:notes") as notes:
                    await asyncio.wait_for(notes.wait_synced(), TIMEOUT * TIMEOUT_FACTOR)
                    assert notes.doc.get("items", type=pycrdt.Array).to_py() == ["tea"]
                async with client.live("other") as other:
                    with pytest.raises(MeridianError) as refused:
                        await asyncio.wait_for(other.wait_synced(), TIMEOUT * TIMEOUT_FACTOR)
                    assert refused.value.status == 403 and other.error is refused.value

            asyncio.run(live())
    finally:
        node.close()


def test_leaving_a_live_document_sends_its_last_edits(node_process: NodeProcess) -> None:
    with MeridianClient([node_process.url]) as client:

        async def edit() -> None:
            async with client.live("letter") as live:
                await asyncio.wait_for(live.wait_synced(), TIMEOUT * TIMEOUT_FACTOR)
                live.doc.get("body", type=pycrdt.Text).insert(0, "Dear ")
                live.doc.get("body", type=pycrdt.Text).insert(5, "Ada")
            assert not live.connected

        asyncio.run(edit())

    def stored() -> bool:
        with node_process.client() as http:
            return bool(http.get("/v1/docs/letter").json().get("content") == {"body": "Dear Ada"})

    wait_for(stored, timeout=TIMEOUT, what="the last edits to be stored")
