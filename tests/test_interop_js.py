"""Interop with the real JavaScript ``yjs`` package (tests/js).

JS -> Meridian: ``gen_updates.js`` builds documents with yjs and gives, per case, the updates
to send and the JSON view yjs itself shows; Meridian must show the same. Meridian -> JS: a
document written with PATCH operations (or its diff since a state vector) is loaded by
``read_update.js``, which must see what Meridian's JSON view shows.

Needs Node.js and npm: ``npm ci`` runs in tests/js when its node_modules is missing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt.statevector import decode_state_vector

from .support import TIMEOUT_FACTOR, ThreadedNode

JS_DIR = Path(__file__).resolve().parent / "js"
OCTET_STREAM = {"Content-Type": "application/octet-stream"}

#: Every case of gen_updates.js. The last ones reproduce bugs found by these tests (map roots
#: read as arrays through overwritten keys, pending updates lost on reload, XML attribute order
#: and tag case): they stay as regression tests.
CASES = [
    "map_root_values",
    "array_root",
    "array_first_item_deleted",
    "text_root_unicode",
    "text_first_char_deleted",
    "text_formatted",
    "xml_fragment",
    "xml_attribute_order",
    "xml_upper_case_name",
    "several_roots",
    "incremental_updates",
    "incremental_updates_reversed",
    "concurrent_clients",
    "map_overwrites_and_delete",
    "map_overwrites_and_delete_incremental",
    "map_overwrite_beside_text_first_deleted",
]


# -- running the JS side ---------------------------------------------------------------------


def _run(command: list[str], what: str, *, stdin: str = "", timeout: float = 60) -> str:
    try:
        done = subprocess.run(
            command,
            cwd=JS_DIR,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout * TIMEOUT_FACTOR,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout * TIMEOUT_FACTOR:.0f}s")
    if done.returncode != 0:
        pytest.fail(f"{what} failed with status {done.returncode}:\n{done.stderr}{done.stdout}")
    return done.stdout


@pytest.fixture(scope="session")
def node_js() -> str:
    """The ``node`` executable, with tests/js's packages installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the JS interop tests need Node.js (>= 18) and npm on PATH; "
            f"found node={node}, npm={npm}. Install Node.js, then rerun."
        )
    if not (JS_DIR / "node_modules").is_dir():
        install = "ci" if (JS_DIR / "package-lock.json").is_file() else "install"
        _run([npm, install, "--no-audit", "--no-fund"], f"npm {install} in {JS_DIR}", timeout=600)
    return node


@pytest.fixture(scope="session")
def js_cases(node_js: str) -> dict[str, dict[str, Any]]:
    cases = json.loads(_run([node_js, "gen_updates.js"], "gen_updates.js"))
    return {case["name"]: case for case in cases}


def read_in_js(node_js: str, updates: list[bytes], roots: dict[str, str]) -> dict[str, Any]:
    """What a fresh yjs ``Y.Doc`` shows after applying ``updates``: ``content`` (root name ->
    toJSON()/toString()), ``pending``, ``state_vector`` and ``odd`` (non-JSON values)."""
    specs = [f"{name}:{kind}" for name, kind in roots.items()]
    stdin = "".join(base64.b64encode(update).decode() + "\n" for update in updates)
    result: dict[str, Any] = json.loads(
        _run([node_js, "read_update.js", *specs], "read_update.js", stdin=stdin)
    )
    return result


# -- talking to the node ---------------------------------------------------------------------


def post_updates(client: httpx.Client, doc_id: str, updates: list[str]) -> None:
    for index, update in enumerate(updates):
        response = client.post(
            f"/v1/docs/{doc_id}/update", content=base64.b64decode(update), headers=OCTET_STREAM
        )
        assert response.status_code == 200, f"update {index}: {response.text}"


def patch(client: httpx.Client, doc_id: str, *ops: dict[str, Any]) -> None:
    response = client.patch(f"/v1/docs/{doc_id}", json={"ops": list(ops)})
    assert response.status_code == 200, response.text


def view(client: httpx.Client, doc_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/docs/{doc_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def binary_state(client: httpx.Client, doc_id: str, since: str | None = None) -> bytes:
    params = {"since": since} if since is not None else {}
    response = client.get(f"/v1/docs/{doc_id}/update", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    return response.content


def assert_js_sees(js: dict[str, Any], content: dict[str, Any], state_vector: str) -> None:
    assert js["odd"] == [], "values JS cannot read as plain JSON"
    assert not js["pending"], "the update left structs waiting for missing ones in JS"
    assert js["content"] == content
    clocks = decode_state_vector(base64.b64decode(js["state_vector"]))
    assert clocks == decode_state_vector(base64.b64decode(state_vector))


# -- JS -> Meridian --------------------------------------------------------------------------


def test_generator_makes_the_listed_cases(js_cases: dict[str, dict[str, Any]]) -> None:
    assert sorted(js_cases) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_js_document_reads_back(
    node: ThreadedNode, js_cases: dict[str, dict[str, Any]], name: str
) -> None:
    case = js_cases[name]
    with node.client() as client:
        post_updates(client, name, case["updates"])
        assert view(client, name)["content"] == case["expected"]


@pytest.mark.parametrize("name", CASES)
def test_js_document_survives_restart(
    tmp_path: Path, node_js: str, js_cases: dict[str, dict[str, Any]], name: str
) -> None:
    """Read back from DuckDB by a new node: the same view, and the whole document for yjs."""
    case = js_cases[name]
    first = ThreadedNode(tmp_path / "node").start()
    try:
        with first.client() as client:
            post_updates(client, name, case["updates"])
    finally:
        first.stop()
    second = ThreadedNode(tmp_path / "node").start()
    try:
        with second.client() as client:
            content = view(client, name)["content"]
            state = binary_state(client, name)
    finally:
        second.stop()
    js = read_in_js(node_js, [state], case["roots"])
    assert not js["pending"], "the state served after the restart is incomplete for yjs"
    assert js["content"] == case["expected"]
    assert content == case["expected"]


@pytest.mark.parametrize("name", list(CASES))
def test_js_document_round_trips_to_js(
    node: ThreadedNode, node_js: str, js_cases: dict[str, dict[str, Any]], name: str
) -> None:
    """What Meridian sends back as the binary state is the same document for yjs."""
    case = js_cases[name]
    with node.client() as client:
        post_updates(client, name, case["updates"])
        state = binary_state(client, name)
    js = read_in_js(node_js, [state], case["roots"])
    assert js["odd"] == [], "values JS cannot read as plain JSON"
    assert not js["pending"], "the state Meridian served is incomplete for yjs"
    assert js["content"] == case["expected"]


# -- Meridian -> JS --------------------------------------------------------------------------

ROOTS = {"settings": "map", "body": "text", "items": "array"}


def test_patch_operations_read_in_js(node: ThreadedNode, node_js: str) -> None:
    with node.client() as client:
        patch(
            client,
            "ops",
            {"op": "set", "path": ["settings", "theme"], "value": "dark"},
            {"op": "set", "path": ["settings", "size"], "value": 12},
            {"op": "set", "path": ["settings", "ratio"], "value": 0.75},
            {"op": "set", "path": ["settings", "limit"], "value": 2**53},
            {"op": "set", "path": ["settings", "below"], "value": -3},
            {"op": "set", "path": ["settings", "none"], "value": None},
            {"op": "set", "path": ["settings", "deep", "er", "flag"], "value": True},
            {"op": "set", "path": ["settings", "object"], "value": {"a": [1, {"b": "c"}]}},
            {"op": "insert_text", "path": ["body"], "index": 0, "text": "Hello 🌍 world"},
            {"op": "append", "path": ["items"], "values": [1, "two", {"three": 3}, [4.5]]},
        )
        patch(
            client,
            "ops",
            # Code points: "Hello 🌍" is 7 of them (8 UTF-16 units).
            {"op": "insert_text", "path": ["body"], "index": 7, "text": " 👋🏽 漢字"},
            {"op": "delete_text", "path": ["body"], "index": 0, "length": 6},
            {"op": "insert", "path": ["items"], "index": 1, "values": ["inserted", 2.5]},
            {"op": "remove", "path": ["items"], "index": 0, "length": 1},
            {"op": "append", "path": ["settings", "object", "a"], "values": [False]},
            {"op": "set", "path": ["settings", "theme"], "value": "light"},
        )
        document = view(client, "ops")
        state = binary_state(client, "ops")
    assert document["content"] == {
        "settings": {
            "theme": "light",
            "size": 12,
            "ratio": 0.75,
            "limit": 2**53,
            "below": -3,
            "none": None,
            "deep": {"er": {"flag": True}},
            "object": {"a": [1, {"b": "c"}, False]},
        },
        "body": "🌍 👋🏽 漢字 world",
        "items": ["inserted", 2.5, "two", {"three": 3}, [4.5]],
    }
    js = read_in_js(node_js, [state], ROOTS)
    assert_js_sees(js, document["content"], document["state_vector"])


def test_patch_on_top_of_a_js_document(
    node: ThreadedNode, node_js: str, js_cases: dict[str, dict[str, Any]]
) -> None:
    case = js_cases["several_roots"]
    with node.client() as client:
        post_updates(client, "mixed", case["updates"])
        patch(
            client,
            "mixed",
            {"op": "set", "path": ["meta", "editor"], "value": "meridian"},
            {"op": "append", "path": ["tags"], "values": ["c"]},
            {"op": "insert_text", "path": ["title"], "index": 0, "text": "🧭 "},
        )
        document = view(client, "mixed")
        state = binary_state(client, "mixed")
    assert document["content"] == {
        "meta": {"owner": "ana", "editor": "meridian"},
        "tags": ["a", "b", "c"],
        "title": "🧭 Several roots",
        "page": "<h1>Title</h1>",
    }
    js = read_in_js(node_js, [state], case["roots"])
    assert_js_sees(js, document["content"], document["state_vector"])


def test_diff_since_state_vector_applies_in_js(node: ThreadedNode, node_js: str) -> None:
    with node.client() as client:
        patch(
            client,
            "diff",
            {"op": "set", "path": ["settings", "theme"], "value": "dark"},
            {"op": "set", "path": ["settings", "gone"], "value": 1},
            {"op": "insert_text", "path": ["body"], "index": 0, "text": "old 🐢 text"},
            {"op": "append", "path": ["items"], "values": [1, 2, 3]},
        )
        older = view(client, "diff")
        older_state = binary_state(client, "diff")
        patch(
            client,
            "diff",
            {"op": "set", "path": ["settings", "theme"], "value": "light"},
            {"op": "delete", "path": ["settings", "gone"]},
            {"op": "set", "path": ["settings", "added"], "value": {"x": [1.5]}},
            {"op": "delete_text", "path": ["body"], "index": 0, "length": 4},
            {"op": "insert_text", "path": ["body"], "index": 1, "text": " 🐇 new"},
            {"op": "remove", "path": ["items"], "index": 1, "length": 1},
            {"op": "insert", "path": ["items"], "index": 0, "values": [0]},
        )
        newer = view(client, "diff")
        diff = binary_state(client, "diff", since=older["state_vector"])
        whole = binary_state(client, "diff")
    assert newer["content"] == {
        "settings": {"theme": "light", "added": {"x": [1.5]}},
        "body": "🐢 🐇 new text",
        "items": [0, 1, 3],
    }
    assert len(diff) < len(whole)
    assert_js_sees(
        read_in_js(node_js, [older_state], ROOTS), older["content"], older["state_vector"]
    )
    js = read_in_js(node_js, [older_state, diff], ROOTS)
    assert_js_sees(js, newer["content"], newer["state_vector"])
