"""The HTTP API of one node, including every kind of bad input (PRODUCT.md principle 7)."""

from __future__ import annotations

import base64
import os
import random
from typing import Any

import httpx
import pycrdt
import pytest

from .support import ThreadedNode

SEED = int(os.environ.get("MERIDIAN_TEST_SEED", random.randrange(2**32)))
OCTET = {"Content-Type": "application/octet-stream"}


def _text_update(text: str, client_id: int = 77) -> bytes:
    doc = pycrdt.Doc(client_id=client_id)
    doc.get("body", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def _state(client: httpx.Client, doc_id: str) -> tuple[int, Any]:
    response = client.get(f"/v1/docs/{doc_id}")
    return response.status_code, response.json()


def test_write_read_diff_delete_cycle(node: ThreadedNode) -> None:
    with node.client() as client:
        health = client.get("/v1/health").json()
        assert {"node", "region", "version"} <= set(health)

        written = client.post("/v1/docs/notes/update", content=_text_update("hello"), headers=OCTET)
        assert written.status_code == 200
        body = written.json()
        assert body["created"] and body["changed"] and body["durability"] == "local"
        sv = base64.b64decode(body["state_vector"])

        patched = client.patch(
            "/v1/docs/notes",
            json={"ops": [{"op": "insert_text", "path": ["body"], "index": 5, "text": " 😀"}]},
        )
        assert patched.status_code == 200 and not patched.json()["created"]

        view = client.get("/v1/docs/notes").json()
        assert view["content"] == {"body": "hello 😀"}
        assert view["id"] == "notes" and "placement" in view and view["state_vector"]

        whole = client.get("/v1/docs/notes/update")
        assert whole.headers["content-type"] == "application/octet-stream"
        replica = pycrdt.Doc()
        replica.apply_update(whole.content)
        assert str(replica.get("body", type=pycrdt.Text)) == "hello 😀"

        # standard and URL-safe base64 are both accepted for since=
        for encoded in (
            base64.b64encode(sv).decode(),
            base64.urlsafe_b64encode(sv).decode().rstrip("="),
        ):
            diff = client.get("/v1/docs/notes/update", params={"since": encoded})
            assert diff.status_code == 200
            older = pycrdt.Doc()
            older.apply_update(_text_update("hello"))
            older.apply_update(diff.content)
            assert str(older.get("body", type=pycrdt.Text)) == "hello 😀"

        duplicate = client.post(
            "/v1/docs/notes/update", content=_text_update("hello"), headers=OCTET
        )
        assert duplicate.status_code == 200 and duplicate.json()["changed"] is False

        listed = client.get("/v1/docs", params={"prefix": "no"}).json()
        assert [d["id"] for d in listed["documents"]] == ["notes"] and listed["next_cursor"] is None

        deleted = client.delete("/v1/docs/notes")
        assert deleted.status_code == 200 and deleted.json()["deleted"]
        _error(client.get("/v1/docs/notes"), 404, "document_deleted")
        _error(client.get("/v1/docs/notes/update"), 404, "document_deleted")
        _error(client.delete("/v1/docs/notes"), 404, "document_deleted")
        _error(client.get("/v1/docs/never-written"), 404, "document_not_found")
        recreated = client.patch(
            "/v1/docs/notes", json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
        )
        assert recreated.json()["incarnation"] == 2
        assert client.get("/v1/docs/notes").json()["content"] == {"m": {"k": 1}}


def test_listing_pages_with_cursor(node: ThreadedNode) -> None:
    with node.client() as client:
        for i in range(5):
            client.patch(
                f"/v1/docs/page-{i}", json={"ops": [{"op": "set", "path": ["m", "i"], "value": i}]}
            )
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"prefix": "page-", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/docs", params=params).json()
            seen += [d["id"] for d in page["documents"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"page-{i}" for i in range(5)]
        _error(client.get("/v1/docs", params={"limit": 0}), 400, "invalid_request")
        _error(client.get("/v1/docs", params={"limit": "many"}), 400, "invalid_request")
        _error(client.get("/v1/docs", params={"cursor": "%%%"}), 400, "invalid_cursor")


def test_bad_input_gets_a_precise_error_and_changes_nothing(node: ThreadedNode) -> None:
    rng = random.Random(SEED)
    valid = _text_update("stable content")
    with node.client() as client:
        assert (
            client.post("/v1/docs/target/update", content=valid, headers=OCTET).status_code == 200
        )
        before = _state(client, "target")

        bad_updates = [
            b"",
            b"\x00",
            os.urandom(64),
            valid[: len(valid) // 2],
            valid + b"\x01",
            b"\x01\xff\xff\xff\xff\x0f" + b"\x00" * 10,
            b"\x01\x01\x01\x00\x04\x01\xff\xff\xff\xff\x07",
        ]
        for _ in range(60):
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            bad_updates.append(bytes(mutated))
        for bad in bad_updates:
            response = client.post("/v1/docs/target/update", content=bad, headers=OCTET)
            if response.status_code == 200:
                # a mutation can still be a well-formed update (another character, client, ...)
                before = _state(client, "target")
                continue
            _error(response, 400, "invalid_update")
            assert _state(client, "target") == before, f"seed={SEED} update={bad.hex()}"
        # the mutations that were valid updates changed it; from here on it must stay fixed
        before = _state(client, "target")

        _error(
            client.post(
                "/v1/docs/target/update",
                content=valid,
                headers={"Content-Type": "application/json"},
            ),
            415,
            "unsupported_media_type",
        )
        _error(client.post("/v1/docs/target/update", content=valid), 415, "unsupported_media_type")
        _error(
            client.patch(
                "/v1/docs/target",
                content=b'{"ops": [',
                headers={"Content-Type": "application/json"},
            ),
            400,
            "invalid_json",
        )
        _error(
            client.patch(
                "/v1/docs/target",
                content=b'{"ops": [NaN]}',
                headers={"Content-Type": "application/json"},
            ),
            400,
            "invalid_json",
        )
        _error(
            client.patch(
                "/v1/docs/target", content=b"\xff\xfe", headers={"Content-Type": "application/json"}
            ),
            400,
            "invalid_json",
        )
        _error(
            client.patch(
                "/v1/docs/target",
                content=b"[" * 100_000,
                headers={"Content-Type": "application/json"},
            ),
            400,
            "invalid_json",
        )
        _error(
            client.patch("/v1/docs/target", content=b"{}", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
        _error(
            client.patch(
                "/v1/docs/target", json={"ops": [{"op": "append", "path": ["body"], "values": [1]}]}
            ),
            422,
            "invalid_operation",
        )
        _error(
            client.patch("/v1/docs/target", json={"ops": [{"op": "nope", "path": ["x"]}]}),
            422,
            "invalid_operation",
        )
        _error(
            client.patch(
                "/v1/docs/target",
                json={
                    "ops": [
                        {"op": "set", "path": ["m", "ok"], "value": 1},
                        {"op": "insert_text", "path": ["body"], "index": 999, "text": "x"},
                    ]
                },
            ),
            422,
            "invalid_operation",
        )
        _error(
            client.patch(
                "/v1/docs/target",
                json={"ops": [{"op": "append", "path": ["a"], "values": [i]} for i in range(1001)]},
            ),
            422,
            "too_many_operations",
        )
        _error(
            client.get("/v1/docs/target/update", params={"since": "***"}),
            400,
            "invalid_state_vector",
        )
        _error(
            client.get(
                "/v1/docs/target/update", params={"since": base64.b64encode(b"\x05\x01").decode()}
            ),
            400,
            "invalid_update",
        )
        _error(
            client.post(
                "/v1/docs/target/update",
                params={"durability": "sometimes"},
                content=valid,
                headers=OCTET,
            ),
            400,
            "invalid_request",
        )
        assert _state(client, "target") == before


@pytest.mark.parametrize(
    "doc_id", ["-leading-dash", "a" * 129, "sp ace", "émoji", "semi;colon", "_x"]
)
def test_invalid_document_ids(node: ThreadedNode, doc_id: str) -> None:
    with node.client() as client:
        _error(client.get(f"/v1/docs/{doc_id}"), 400, "invalid_document_id")
        _error(
            client.post(f"/v1/docs/{doc_id}/update", content=_text_update("x"), headers=OCTET),
            400,
            "invalid_document_id",
        )
        _error(
            client.patch(
                f"/v1/docs/{doc_id}", json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]}
            ),
            400,
            "invalid_document_id",
        )
        _error(client.delete(f"/v1/docs/{doc_id}"), 400, "invalid_document_id")


def test_valid_ids_with_punctuation(node: ThreadedNode) -> None:
    with node.client() as client:
        for doc_id in ["a", "A.b_c:d-e", "9" * 128]:
            assert (
                client.patch(
                    f"/v1/docs/{doc_id}",
                    json={"ops": [{"op": "set", "path": ["m", "k"], "value": 1}]},
                ).status_code
                == 200
            )
            assert client.get(f"/v1/docs/{doc_id}").json()["id"] == doc_id


def test_body_size_limit(tmp_path: Any) -> None:
    from app.config import ClusterConfig, HttpLimits

    cluster = ClusterConfig(http=HttpLimits(max_body_bytes=1000))
    node = ThreadedNode(tmp_path / "n", cluster=cluster).start()
    try:
        with node.client() as client:
            _error(
                client.post("/v1/docs/big/update", content=_text_update("x" * 2000), headers=OCTET),
                413,
                "body_too_large",
            )

            def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
                for _ in range(10):
                    yield b"\x00" * 500

            _error(
                client.post("/v1/docs/big/update", content=chunks(), headers=OCTET),
                413,
                "body_too_large",
            )
            _error(client.get("/v1/docs/big"), 404, "document_not_found")
    finally:
        node.stop()


def test_document_size_limit_is_413(tmp_path: Any) -> None:
    from app.config import ClusterConfig
    from crdt import StoreLimits

    node = ThreadedNode(
        tmp_path / "n", cluster=ClusterConfig(limits=StoreLimits(max_document_bytes=2000))
    ).start()
    try:
        with node.client() as client:
            assert (
                client.post(
                    "/v1/docs/d/update", content=_text_update("x" * 1500), headers=OCTET
                ).status_code
                == 200
            )
            before = _state(client, "d")
            _error(
                client.post(
                    "/v1/docs/d/update",
                    content=_text_update("y" * 1000, client_id=78),
                    headers=OCTET,
                ),
                413,
                "document_too_large",
            )
            assert _state(client, "d") == before
    finally:
        node.stop()


def test_unknown_routes_and_methods_use_the_error_format(node: ThreadedNode) -> None:
    with node.client() as client:
        _error(client.get("/v1/nothing"), 404, "not_found")
        _error(client.put("/v1/docs/x"), 405, "method_not_allowed")


def test_durability_levels_beyond_local_are_refused_for_now(node: ThreadedNode) -> None:
    with node.client() as client:
        _error(
            client.post(
                "/v1/docs/d/update",
                params={"durability": "all"},
                content=_text_update("x"),
                headers=OCTET,
            ),
            422,
            "durability_unavailable",
        )
        _error(client.get("/v1/docs/d"), 404, "document_not_found")


def test_openapi_documents_the_api_with_examples(node: ThreadedNode) -> None:
    with node.client() as client:
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        paths = spec["paths"]
        assert {"/v1/health", "/v1/docs", "/v1/docs/{doc_id}", "/v1/docs/{doc_id}/update"} <= set(
            paths
        )
        assert (
            "application/octet-stream"
            in paths["/v1/docs/{doc_id}/update"]["post"]["requestBody"]["content"]
        )
        assert (
            "example"
            in paths["/v1/docs/{doc_id}"]["patch"]["requestBody"]["content"]["application/json"]
        )
