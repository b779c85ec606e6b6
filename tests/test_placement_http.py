"""Bad input to placement and to forwarding, at the HTTP level, against real nodes: a standalone
node and a small placement cluster of node processes (PRODUCT.md, Principle 7: "bad input gets a
clear error and changes nothing"; docs/api.md, "PUT /v1/docs/{id}/placement" and "Any node
answers, and says which served").

Every refused request is answered with the status and error code docs/api.md gives it, never a
5xx, and leaves the placement records and the documents as they were, at every node.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pycrdt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from app.cluster.catalog import encode_record
from app.cluster.placement import PlacementRecord, Stamp
from app.http.forward import FORWARDED_HEADER, sign_forwarded

from .cluster import SECRET, Cluster
from .support import TIMEOUT_FACTOR, ThreadedNode, wait_for

LAYOUT = {"us-east": 2, "eu-west": 1, "ap-south": 1}
PLACEMENT = {"replicas": 2, "nodes_per_region": 1}
SEED = random.randrange(2**32)
PLACEMENT_HEADER = "x-meridian-placement"
SERVED_BY = "x-meridian-served-by"

#: One bad body: what it tests, the bytes sent, and the answer docs/api.md gives it.
Case = tuple[str, bytes, int, str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    print(f"seed={SEED}")
    root = tmp_path_factory.mktemp("placement-http")
    running = Cluster(root, LAYOUT, latency_ms=5, placement=PLACEMENT, seed=SEED)
    try:
        running.start()
        running.wait_links_up()
        yield running
    finally:
        running.close()


# -- helpers ---------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def bad_bodies(regions: list[str]) -> list[Case]:
    """Placement bodies a topology of ``regions`` refuses, with their documented answers."""
    n = len(regions)
    first = regions[0]
    malformed = [
        # not JSON at all: 400 invalid_json
        ("truncated", b'{"regions": ["', 400, "invalid_json"),
        ("form", b"regions=" + first.encode(), 400, "invalid_json"),
        ("not utf-8", b'{"replicas": "\xff\xfe"}', 400, "invalid_json"),
        ("empty", b"", 400, "invalid_json"),
        ("trailing data", b'{"replicas": 1} {"replicas": 1}', 400, "invalid_json"),
        ("NaN", b"NaN", 400, "invalid_json"),
        ("Infinity in an object", b'{"replicas": Infinity}', 400, "invalid_json"),
        ("nested past the parser", b"[" * 1500 + b"]" * 1500, 400, "invalid_json"),
        # JSON, but not an object of regions or replicas: 400 invalid_placement
        ("a string", b'"eu-west"', 400, "invalid_placement"),
        ("null", b"null", 400, "invalid_placement"),
        ("a number", b"1", 400, "invalid_placement"),
        ("a list", _json([{"replicas": 1}]), 400, "invalid_placement"),
        ("neither key", b"{}", 400, "invalid_placement"),
        ("only pinned", _json({"pinned": True}), 400, "invalid_placement"),
        ("both keys", _json({"regions": [first], "replicas": 1}), 400, "invalid_placement"),
        ("an unknown key", _json({"regions": [first], "extra": 1}), 400, "invalid_placement"),
        ("a key's case", _json({"Regions": [first]}), 400, "invalid_placement"),
        ("a huge unknown key", _json({"k" * 4000: 1}), 400, "invalid_placement"),
        ("regions a string", _json({"regions": first}), 400, "invalid_placement"),
        ("regions an object", _json({"regions": {first: 1}}), 400, "invalid_placement"),
        ("regions null", _json({"regions": None}), 400, "invalid_placement"),
        ("a number as region", _json({"regions": [1]}), 400, "invalid_placement"),
        ("null as region", _json({"regions": [None]}), 400, "invalid_placement"),
        ("a list as region", _json({"regions": [[first]]}), 400, "invalid_placement"),
        (
            "deep list as region",
            b'{"regions": [' + b"[" * 900 + b"]" * 900 + b"]}",
            400,
            "invalid_placement",
        ),
        ("replicas true", _json({"replicas": True}), 400, "invalid_placement"),
        ("replicas false", _json({"replicas": False}), 400, "invalid_placement"),
        ("replicas 1.0", _json({"replicas": 1.0}), 400, "invalid_placement"),
        ("replicas 1.5", _json({"replicas": 1.5}), 400, "invalid_placement"),
        ("replicas a string", _json({"replicas": "1"}), 400, "invalid_placement"),
        ("replicas null", _json({"replicas": None}), 400, "invalid_placement"),
        ("replicas a list", _json({"replicas": [1]}), 400, "invalid_placement"),
        (
            "pinned a string",
            _json({"regions": [first], "pinned": "true"}),
            400,
            "invalid_placement",
        ),
        ("pinned 1", _json({"regions": [first], "pinned": 1}), 400, "invalid_placement"),
        ("pinned null", _json({"regions": [first], "pinned": None}), 400, "invalid_placement"),
        ("pinned 0 on replicas", _json({"replicas": 1, "pinned": 0}), 400, "invalid_placement"),
    ]
    unsatisfiable = [
        ("no regions", _json({"regions": []}), 422, "invalid_placement"),
        ("duplicate regions", _json({"regions": [first, first]}), 422, "invalid_placement"),
        ("an unknown region", _json({"regions": ["mars"]}), 422, "invalid_placement"),
        ("a region's case", _json({"regions": [first.upper()]}), 422, "invalid_placement"),
        ("a region with a space", _json({"regions": [first + " "]}), 422, "invalid_placement"),
        ("a huge region", _json({"regions": ["x" * 4000]}), 422, "invalid_placement"),
        (
            "more regions than the cluster",
            _json({"regions": [*regions, "mars"]}),
            422,
            "invalid_placement",
        ),
        ("every region twice", _json({"regions": regions * 2}), 422, "invalid_placement"),
        ("replicas 0", _json({"replicas": 0}), 422, "invalid_placement"),
        ("replicas -1", _json({"replicas": -1}), 422, "invalid_placement"),
        ("replicas past the regions", _json({"replicas": n + 1}), 422, "invalid_placement"),
        ("replicas huge", _json({"replicas": 10**30}), 422, "invalid_placement"),
        ("replicas 0 pinned", _json({"replicas": 0, "pinned": True}), 422, "invalid_placement"),
    ]
    too_large = [
        ("over 4 KiB", _json({"regions": [first]}) + b" " * 4096, 413, "body_too_large"),
        ("a huge region name", _json({"regions": ["x" * 5000]}), 413, "body_too_large"),
    ]
    return malformed + unsatisfiable + too_large


def put_placement(client: httpx.Client, doc_id: str, body: bytes, **headers: str) -> httpx.Response:
    return client.put(
        f"/v1/docs/{doc_id}/placement",
        content=body,
        headers={"content-type": "application/json", **headers},
    )


def placement(client: httpx.Client, doc_id: str) -> tuple[int, Any]:
    answer = client.get(f"/v1/docs/{doc_id}/placement")
    return answer.status_code, answer.json()


def error_code(answer: httpx.Response) -> str | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def check_refused(answer: httpx.Response, status: int, code: str, what: str) -> None:
    got = (answer.status_code, error_code(answer))
    assert got == (status, code), f"{what}: {got}, not {(status, code)}: {answer.text[:300]}"


def append(client: httpx.Client, doc_id: str, value: Any) -> httpx.Response:
    ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
    return client.patch(f"/v1/docs/{doc_id}", json=ops)


def local_view(client: httpx.Client, doc_id: str) -> tuple[int, Any]:
    """A node's own copy of a document (404 when it has none), never a holder's."""
    answer = client.get(f"/v1/docs/{doc_id}", params={"local": "true", "digest": "true"})
    if answer.status_code != 200:
        return answer.status_code, error_code(answer)
    body = answer.json()
    return 200, (body["content"], body["state_vector"], body["digest"])


def placement_at(cluster: Cluster, node: str, doc_id: str) -> tuple[int, Any]:
    with cluster[node].client() as client:
        return placement(client, doc_id)


def local_at(cluster: Cluster, node: str, doc_id: str) -> tuple[int, Any]:
    with cluster[node].client() as client:
        return local_view(client, doc_id)


def copies(cluster: Cluster, doc_ids: list[str]) -> dict[str, Any]:
    """Every node's own copy and placement record of each document."""
    out: dict[str, Any] = {}
    for node in cluster.members:
        with cluster[node].client() as client:
            for doc_id in doc_ids:
                out[f"{node} {doc_id}"] = (local_view(client, doc_id), placement(client, doc_id))
    return out


def check_healthy(urls: list[str]) -> None:
    for url in urls:
        with httpx.Client(base_url=url, timeout=10 * TIMEOUT_FACTOR) as client:
            assert client.get("/v1/health").status_code == 200, f"{url} unhealthy"


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """The next answer on ``sock``: (status, body), or (0, b"") when it was closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    lengths = [
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    ]
    while lengths and len(body) < lengths[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body


def raw_exchange(
    port: int, parts: list[bytes], *, close_write: bool = False
) -> list[tuple[int, bytes]]:
    """Sends each of ``parts`` as raw bytes on one connection, reading an answer after each
    (then half-closes, with ``close_write``); the answers, (0, b"") for "closed, no answer"."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10 * TIMEOUT_FACTOR) as sock:
        for part in parts:
            try:
                sock.sendall(part)
                if close_write:
                    sock.shutdown(socket.SHUT_WR)
                answers.append(_read_answer(sock))
            except OSError:  # reset: the node closed the connection
                answers.append((0, b""))
            if answers[-1][0] == 0:
                break
    return answers


def raw_put(doc_id: str, body: bytes, headers: list[str]) -> bytes:
    lines = [f"PUT /v1/docs/{doc_id}/placement HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


#: Answers of the HTTP parser (uvicorn's), which refuses a request before the node sees it.
PARSER = (400, b"Invalid HTTP request received.")


def check_content_length_games(port: int, doc_id: str) -> None:
    """PUTs whose Content-Length lies, or is no length: each gets its documented answer (or
    the HTTP parser's 400, or the connection closed), never a 2xx or a 5xx."""
    valid = _json({"replicas": 1})  # a change of policy, were it read whole
    json_type = "Content-Type: application/json"

    def put(body: bytes, *headers: str) -> bytes:
        return raw_put(doc_id, body, [json_type, *headers])

    too_large = (413, b'"body_too_large"')
    not_json = (400, b'"invalid_json"')
    closed = (0, b"")
    games: list[tuple[str, list[bytes], list[tuple[int, bytes]], bool]] = [
        ("declared past 4 KiB", [put(valid, "Content-Length: 5000")], [too_large], False),
        # the first 5 bytes are the body; the rest, sent once answered, is no request
        (
            "declared shorter",
            [put(valid[:5], "Content-Length: 5"), valid[5:]],
            [not_json, PARSER],
            False,
        ),
        ("declared zero", [put(b"", "Content-Length: 0"), valid], [not_json, PARSER], False),
        ("declared longer, then EOF", [put(valid, "Content-Length: 100")], [closed], True),
        ("declared huge", [put(valid, "Content-Length: " + "9" * 40)], [PARSER], False),
        ("not a number", [put(valid, "Content-Length: abc")], [PARSER], False),
        ("negative", [put(valid, "Content-Length: -1")], [PARSER], False),
        (
            "two lengths",
            [put(valid, f"Content-Length: {len(valid)}", "Content-Length: 3")],
            [PARSER],
            False,
        ),
        (
            "chunked past 4 KiB",
            [put(b"1400\r\n" + b" " * 0x1400 + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked")],
            [too_large],
            False,
        ),
        (
            "chunked and a length",
            [
                put(
                    b"f\r\n" + valid + b"\r\n0\r\n\r\n",
                    "Transfer-Encoding: chunked",
                    f"Content-Length: {len(valid)}",
                )
            ],
            [PARSER],
            False,
        ),
    ]
    for what, parts, expected, close_write in games:
        got = raw_exchange(port, parts, close_write=close_write)
        ok = len(got) == len(expected) and all(
            status == want and marker in body
            for (status, body), (want, marker) in zip(got, expected, strict=True)
        )
        assert ok, f"{what}: answered {got}, expected {expected}"


# -- placement bodies --------------------------------------------------------------------------


def test_bad_placement_bodies_change_nothing_on_a_standalone_node(node: ThreadedNode) -> None:
    with node.client() as client:
        assert append(client, "written", 1).status_code == 200
        set_ = put_placement(client, "placed", _json({"regions": ["eu-west"], "pinned": True}))
        assert set_.status_code == 200, set_.text
        before = {doc: placement(client, doc) for doc in ("written", "placed", "absent")}
        assert before["absent"][0] == 404
        failures = []
        for what, body, status, code in bad_bodies(["eu-west"]):
            for doc_id in before:
                answer = put_placement(client, doc_id, body)
                got = (answer.status_code, error_code(answer))
                if got != (status, code):
                    failures.append(f"{what} on {doc_id}: {got}, not {(status, code)}")
        check_content_length_games(node.port, "placed")
        after = {doc: placement(client, doc) for doc in before}
        assert after == before
        assert client.get("/v1/docs/absent").status_code == 404
        assert [d["id"] for d in client.get("/v1/docs").json()["documents"]] == ["written"]
        assert not failures, "\n".join(failures)
    check_healthy([node.url])


def test_bad_placement_bodies_change_nothing_in_a_cluster(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    nodes = list(cluster.members)
    regions = sorted(LAYOUT)
    with cluster["eu-west-1"].client() as client:
        assert append(client, "bad-written", 1).status_code == 200
        counted = put_placement(client, "bad-counted", _json({"replicas": 3}))
        assert counted.status_code == 200, counted.text
        pinned = put_placement(
            client, "bad-pinned", _json({"regions": ["eu-west"], "pinned": True})
        )
        assert pinned.status_code == 200, pinned.text
    docs = ["bad-written", "bad-counted", "bad-pinned", "bad-absent"]
    wait_for(
        lambda: all(
            placement_at(cluster, n, "bad-pinned")[1].get("pinned") is True
            and placement_at(cluster, n, "bad-counted")[1].get("policy") == "count"
            for n in nodes
        ),
        timeout=10,
        what="the records at every node",
    )
    before = copies(cluster, docs)
    assert before["us-east-1 bad-absent"][1][0] == 404
    failures = []
    clients = {n: cluster[n].client() for n in nodes}
    try:
        for what, body, status, code in bad_bodies(regions):
            for doc_id in docs:
                node = rng.choice(nodes)
                answer = put_placement(clients[node], doc_id, body)
                got = (answer.status_code, error_code(answer))
                if got != (status, code):
                    failures.append(f"{what} on {doc_id} at {node}: {got}, not {(status, code)}")
        # Invalid document ids: 400 (an id with "/" names no route: 404 not_found).
        valid = _json({"regions": ["eu-west"]})
        for doc_id in ["-x", ".x", "x" * 129, "a b", "caf%C3%A9", "a%00b", "a%0A", "a*"]:
            answer = put_placement(clients[rng.choice(nodes)], doc_id, valid)
            check_refused(answer, 400, "invalid_document_id", f"id {doc_id!r}")
        for doc_id in ["a/b", "a%2Fb"]:
            answer = put_placement(clients[rng.choice(nodes)], doc_id, valid)
            check_refused(answer, 404, "not_found", f"id {doc_id!r}")
        # Lengths that lie, at every node.
        for node in nodes:
            check_content_length_games(cluster[node].port, "bad-pinned")
    finally:
        for client in clients.values():
            client.close()
    assert copies(cluster, docs) == before
    for node in nodes:
        assert not any(doc.startswith("bad-absent") for doc in cluster.documents(node))
    check_healthy([m.url for m in cluster.members.values()])
    assert not failures, "\n".join(failures)


def test_a_pin_is_moved_or_released_only_when_asked(cluster: Cluster) -> None:
    with cluster["us-east-1"].client() as client:
        pinned = put_placement(client, "resident", _json({"regions": ["eu-west"], "pinned": True}))
        assert pinned.status_code == 200, pinned.text
        assert (pinned.json()["regions"], pinned.json()["pinned"]) == (["eu-west"], True)
        assert append(client, "resident", "in eu-west").status_code == 200
    for node in cluster.members:
        with cluster[node].client() as client:
            wait_for(
                lambda client=client: placement(client, "resident")[1].get("pinned") is True,
                what=f"the pin known at {node}",
            )
    pin = placement_at(cluster, "ap-south-1", "resident")
    # A change that says nothing of the pin and would store the content elsewhere: 409.
    for node in cluster.members:
        with cluster[node].client() as client:
            for body in (
                {"regions": ["us-east"]},
                {"regions": ["eu-west", "us-east"]},
                {"replicas": 2},
                {"replicas": 3},
            ):
                answer = put_placement(client, "resident", _json(body))
                check_refused(answer, 409, "conflicts_with_pin", f"{body} at {node}")
            assert placement(client, "resident") == pin
    # Saying "pinned": true with the new regions moves the pin.
    with cluster["ap-south-1"].client() as client:
        moved = put_placement(client, "resident", _json({"regions": ["us-east"], "pinned": True}))
        assert moved.status_code == 200, moved.text
        assert (moved.json()["regions"], moved.json()["pinned"]) == (["us-east"], True)
        assert [cluster[h].region for h in moved.json()["holders"]] == ["us-east"]
    holder = moved.json()["holders"][0]
    with cluster[holder].client() as client:
        wait_for(
            lambda: local_view(client, "resident")[0] == 200,
            timeout=30,
            what=f"{holder} to pull the moved document",
        )
        assert local_view(client, "resident")[1][0] == {"items": ["in eu-west"]}
    wait_for(
        lambda: "resident" not in cluster.documents("eu-west-1"),
        timeout=30,
        what="eu-west-1's copy handed off and dropped",
    )
    # Still pinned: a change back without "pinned" conflicts again.
    with cluster["eu-west-1"].client() as client:
        again = put_placement(client, "resident", _json({"regions": ["eu-west"]}))
        check_refused(again, 409, "conflicts_with_pin", "moving back without pinned")
        # "pinned": false releases it.
        released = put_placement(
            client, "resident", _json({"regions": ["eu-west", "us-east"], "pinned": False})
        )
        assert released.status_code == 200, released.text
        assert released.json()["pinned"] is False
        assert sorted(released.json()["regions"]) == ["eu-west", "us-east"]
        # Unpinned, a change that does not say "pinned" is accepted.
        free = put_placement(client, "resident", _json({"replicas": 2}))
        assert free.status_code == 200, free.text
        assert (free.json()["policy"], free.json()["pinned"]) == ("count", False)
    check_healthy([m.url for m in cluster.members.values()])


def test_a_change_that_does_not_say_pinned_keeps_the_pin(cluster: Cluster) -> None:
    """docs/api.md: on a pinned document, '"pinned": false' releases the pin. A change that
    says nothing of the pin and keeps the content in its regions must not release it either:
    it is refused (409) or the pin stays."""
    with cluster["us-east-1"].client() as client:
        pinned = put_placement(client, "kept-pin", _json({"regions": ["eu-west"], "pinned": True}))
        assert pinned.status_code == 200, pinned.text
    for body in ({"regions": ["eu-west"]}, {"replicas": 1}):
        with cluster["eu-west-1"].client() as client:
            answer = put_placement(client, "kept-pin", _json(body))
            assert answer.status_code in (200, 409), answer.text
            after = placement(client, "kept-pin")[1]
            assert (after["regions"], after["pinned"]) == (["eu-west"], True), (
                f"PUT {body} without 'pinned' answered {answer.status_code} {answer.text}"
            )


# -- forwarding ---------------------------------------------------------------------------------


def _update_adding(value: str) -> bytes:
    doc = pycrdt.Doc()
    doc.get("items", type=pycrdt.Array).append(value)
    return doc.get_update()


#: The HTTP document routes: (method, path after /v1/docs/{id}, body, content type).
ROUTES: list[tuple[str, str, bytes, str | None]] = [
    ("GET", "", b"", None),
    ("GET", "/update", b"", None),
    ("GET", "/replicas", b"", None),
    ("POST", "/update", _update_adding("forged-binary"), "application/octet-stream"),
    (
        "PATCH",
        "",
        _json({"ops": [{"op": "append", "path": ["items"], "values": ["forged"]}]}),
        "application/json",
    ),
    ("DELETE", "", b"", None),
]


def hostile_headers(method: str, target: str) -> dict[str, str]:
    """``X-Meridian-Forwarded`` values no node of this cluster sent for ``method target``."""
    now = time.time()
    secret = SECRET.encode()
    other_method = "GET" if method != "GET" else "DELETE"
    return {
        "garbage": "hello",
        "empty": "",
        "too long": "us-east-1;" + "1" * 300,
        "three fields, bad hex": f"us-east-1;{int(now * 1000)};{'g' * 64}",
        "zero mac": f"us-east-1;{int(now * 1000)};{'0' * 64}",
        "invalid node id": f"-x;{int(now * 1000)};{'0' * 64}",
        "stale": sign_forwarded(secret, "us-east-2", method, target, now - 120),
        "from the future": sign_forwarded(secret, "us-east-2", method, target, now + 120),
        "another method": sign_forwarded(secret, "us-east-2", other_method, target, now),
        "another path": sign_forwarded(secret, "us-east-2", method, target + "x", now),
        "another query": sign_forwarded(secret, "us-east-2", method, target + "?local=true", now),
        "another cluster": sign_forwarded(b"another secret", "us-east-2", method, target, now),
    }


def _ws_close_code(url: str, path: str, header: str) -> tuple[int | None, str]:
    """Opens a client WebSocket with ``X-Meridian-Forwarded: header``; the code and reason it
    is closed with (None when it was not closed within the deadline)."""

    async def session() -> tuple[int | None, str]:
        ws_url = url.replace("http", "ws") + path
        async with websockets.connect(
            ws_url, additional_headers={FORWARDED_HEADER: header}, open_timeout=10
        ) as ws:
            try:
                async with asyncio.timeout(10 * TIMEOUT_FACTOR):
                    while True:
                        await ws.recv()
            except ConnectionClosed as exc:
                return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "no close frame")
            except TimeoutError:
                return None, "still open"

    return asyncio.run(session())


def test_forged_forwarded_headers_are_refused_and_change_nothing(cluster: Cluster) -> None:
    with cluster["eu-west-1"].client() as client:
        assert append(client, "victim", "kept").status_code == 200
    docs = ["victim", "ghost"]
    holders = placement_at(cluster, "us-east-1", "victim")[1]["holders"]
    wait_for(
        lambda: all(local_at(cluster, h, "victim")[0] == 200 for h in holders),
        what="the victim on its holders",
    )
    before = copies(cluster, docs)
    failures = []
    answers: list[tuple[str, int]] = []
    for node in cluster.members:
        with cluster[node].client() as client:
            for doc_id in docs:
                for method, suffix, body, content_type in ROUTES:
                    target = f"/v1/docs/{doc_id}{suffix}"
                    for what, value in hostile_headers(method, target).items():
                        headers = {FORWARDED_HEADER: value}
                        if content_type:
                            headers["content-type"] = content_type
                        answer = client.request(method, target, content=body, headers=headers)
                        answers.append(
                            (f"{method} {target} at {node} ({what})", answer.status_code)
                        )
                        got = (answer.status_code, error_code(answer))
                        if got != (400, "forged_forward"):
                            failures.append(f"{method} {target} at {node}, {what}: {got}")
                        elif answer.headers.get(SERVED_BY) != node:
                            failures.append(
                                f"{method} {target} at {node}: served by "
                                f"{answer.headers.get(SERVED_BY)}"
                            )
            # WebSockets: closed with 4400, for a document that exists and one that does not.
            for doc_id in docs:
                for path in (f"/v1/sync/{doc_id}", f"/v1/docs/{doc_id}/events"):
                    headers = hostile_headers("GET", path)
                    for what in headers:
                        code, reason = _ws_close_code(cluster[node].url, path, headers[what])
                        if code != 4400:
                            failures.append(f"WS {path} at {node}, {what}: {code} {reason!r}")
    assert not failures, "\n".join(failures)
    assert all(400 <= status < 500 for _, status in answers)
    assert copies(cluster, docs) == before
    check_healthy([m.url for m in cluster.members.values()])
    cluster.wait_links_up(timeout=10)


def test_a_placement_header_without_a_valid_forward_is_ignored(cluster: Cluster) -> None:
    with cluster["eu-west-1"].client() as client:
        assert append(client, "steady", "first").status_code == 200
    steady = placement_at(cluster, "eu-west-1", "steady")[1]
    assert steady["home"] == "eu-west"
    later = Stamp(int(time.time() * 1000) + 3_600_000, "ap-south-1")
    hostile = {
        # the same document, moved to and pinned in ap-south by a "later" change
        "steady": PlacementRecord(
            "steady", "ap-south", Stamp(1, "ap-south-1"), "regions", ("ap-south",), 0, True, later
        ),
        # a document never written: homed elsewhere by an early birth
        "newborn": PlacementRecord("newborn", "ap-south", Stamp(1, "ap-south-1")),
    }
    for node in ("us-east-1", "eu-west-1"):
        with cluster[node].client() as client:
            for doc_id, record in hostile.items():
                header = encode_record(record).decode()
                # no forwarded header: the record is ignored, the write goes on as usual
                written = client.patch(
                    f"/v1/docs/{doc_id}",
                    json={"ops": [{"op": "append", "path": ["items"], "values": [node]}]},
                    headers={PLACEMENT_HEADER: header},
                )
                assert written.status_code == 200, written.text
                # with a forged one: refused before the record is looked at
                forged = client.patch(
                    f"/v1/docs/{doc_id}",
                    json={"ops": [{"op": "append", "path": ["items"], "values": ["forged"]}]},
                    headers={PLACEMENT_HEADER: header, FORWARDED_HEADER: "us-east-2;1;" + "0" * 64},
                )
                check_refused(forged, 400, "forged_forward", f"forged forward at {node}")
    for node in cluster.members:
        with cluster[node].client() as client:
            assert placement(client, "steady")[1] == steady
            newborn = placement(client, "newborn")[1]
            assert newborn["home"] == "us-east", newborn  # where it was first written
            assert newborn["pinned"] is False
    expected = {
        "steady": ["first", "us-east-1", "eu-west-1"],
        "newborn": ["us-east-1", "eu-west-1"],
    }
    for doc_id in hostile:
        holder = placement_at(cluster, "us-east-1", doc_id)[1]["holders"][0]
        with cluster[holder].client() as client:
            wait_for(
                lambda client=client, doc_id=doc_id: (
                    local_view(client, doc_id)[0] == 200
                    and sorted(local_view(client, doc_id)[1][0]["items"])
                    == sorted(expected[doc_id])
                ),
                timeout=20,
                what=f"both writes of {doc_id} at {holder}",
            )


def test_a_forwarded_request_is_never_forwarded_again(cluster: Cluster) -> None:
    with cluster["eu-west-1"].client() as client:
        assert append(client, "onehop", "first").status_code == 200
        record = placement(client, "onehop")[1]
    outsiders = [n for n in cluster.members if n not in record["holders"]]
    assert outsiders, record
    secret = SECRET.encode()
    acknowledged = ["first"]
    for outsider in outsiders:
        with cluster[outsider].client() as client:
            assert local_view(client, "onehop") == (404, "document_not_found")
            # without the header, it forwards
            relayed = client.get("/v1/docs/onehop")
            assert relayed.status_code == 200
            assert relayed.headers[SERVED_BY] in record["holders"]
            # a read already forwarded by a node: served here or refused, never forwarded
            for suffix in ("", "/update", "/replicas"):
                target = f"/v1/docs/onehop{suffix}"
                signed = sign_forwarded(secret, "ap-south-1", "GET", target, time.time())
                answer = client.get(target, headers={FORWARDED_HEADER: signed})
                check_refused(answer, 503, "holders_unreachable", f"GET {target} at {outsider}")
                assert answer.headers[SERVED_BY] == outsider
            # a write already forwarded: kept here as a hint, never forwarded
            target = "/v1/docs/onehop"
            signed = sign_forwarded(secret, "ap-south-1", "PATCH", target, time.time())
            value = f"hint-{outsider}"
            written = client.patch(
                target,
                json={"ops": [{"op": "append", "path": ["items"], "values": [value]}]},
                headers={FORWARDED_HEADER: signed},
            )
            assert written.status_code == 200, written.text
            assert written.headers[SERVED_BY] == outsider
            acknowledged.append(value)
    for holder in record["holders"]:
        with cluster[holder].client() as client:
            wait_for(
                lambda client=client: (
                    local_view(client, "onehop")[0] == 200
                    and sorted(local_view(client, "onehop")[1][0]["items"]) == sorted(acknowledged)
                ),
                timeout=30,
                what=f"every acknowledged element at {holder}",
            )
    wait_for(
        lambda: all("onehop" not in cluster.documents(n) for n in outsiders),
        timeout=30,
        what="the hints handed off and dropped",
    )
    check_healthy([m.url for m in cluster.members.values()])
