"""``meridian status`` against real clusters (every node holding every document, and with
placement: each document compared on its holders only), and the logs of ``meridian serve``:
JSON lines naming the node, and no token or secret in them."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.auth import create_token
from app.logs import JsonFormatter, NodeContext, Redactor, TextFormatter

from .cluster import Cluster
from .support import TIMEOUT_FACTOR, NodeProcess, run_meridian, wait_for

SECRET = "status-test-secret-0123"
#: A cluster with placement: each document on 2 regions, one node in each.
PLACED = {"us-east": 2, "eu-west": 1, "ap-south": 1}
PLACEMENT = {"replicas": 2, "nodes_per_region": 1}
ALL_NODES = "ap-south-1, eu-west-1, us-east-1, us-east-2"


def _meridian(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MERIDIAN_TOKEN"}
    return run_meridian(*args, env={**environment, **(env or {})}, timeout=120)


def _set(client_node: str, cluster: Cluster, doc_id: str, value: object) -> None:
    with cluster[client_node].client() as client:
        answer = client.patch(
            f"/v1/docs/{doc_id}", json={"ops": [{"op": "set", "path": ["m", "k"], "value": value}]}
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}).start()
    try:
        running.wait_links_up()
        yield running
    finally:
        running.close()


@pytest.fixture
def placed(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, PLACED, placement=PLACEMENT).start()
    try:
        running.wait_links_up()
        yield running
    finally:
        running.close()


def _holders(cluster: Cluster, doc_id: str, node: str = "us-east-1") -> list[str]:
    with cluster[node].client() as client:
        answer = client.get(f"/v1/docs/{doc_id}/placement")
        assert answer.status_code == 200, answer.text
        holders: list[str] = answer.json()["holders"]
        return holders


def _report(*args: str) -> tuple[int, dict[str, Any]]:
    """``meridian status --json`` with ``args``: its exit status and its document."""
    shown = _meridian("status", *args, "--json")
    assert shown.stdout, shown.stderr
    report: dict[str, Any] = json.loads(shown.stdout)
    return shown.returncode, report


def test_status_shows_every_node_and_check_proves_convergence(cluster: Cluster) -> None:
    for i in range(6):
        _set("us-east-1" if i % 2 else "eu-west-1", cluster, f"doc-{i}", i)
    cluster.wait_converged()
    config = str(cluster.config)

    shown = _meridian("status", "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert "2 up" in shown.stdout
    for node in ("us-east-1", "eu-west-1"):
        assert any(line.split()[1:4:2] == [node, "up"] for line in shown.stdout.splitlines()[3:5])
    assert "links, as each node sees them" in shown.stdout
    assert "unreachable" not in shown.stdout

    checked = _meridian("status", "--config", config, "--check", "--progress")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "check: 6 documents identical on 2 nodes (eu-west-1, us-east-1)" in checked.stdout
    assert "checked 6/6 documents" in checked.stderr

    as_json = _meridian("status", "--config", config, "--check", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert {n["node"]: n["state"] for n in report["nodes"]} == {
        "us-east-1": "up",
        "eu-west-1": "up",
    }
    assert report["check"]["identical"] == 6 and report["check"]["differences"] == []


def test_check_names_documents_that_differ_and_nodes_that_are_down(cluster: Cluster) -> None:
    for i in range(3):
        _set("us-east-1", cluster, f"doc-{i}", i)
    cluster.wait_converged()
    config = str(cluster.config)

    # Cut eu-west off, then write there only: its copies are now ahead of us-east's.
    cluster.wan.do(lambda: cluster.wan.wan.isolate("eu-west"))
    _set("eu-west-1", cluster, "doc-1", "split")
    _set("eu-west-1", cluster, "only-eu", 1)
    differ = _meridian("status", "--config", config, "--check")
    assert differ.returncode == 1, differ.stdout + differ.stderr
    assert "2 of 4 documents differ between 2 nodes" in differ.stdout
    lines = differ.stdout.splitlines()
    start = lines.index("  only-eu")
    assert lines[start + 1].startswith("    eu-west-1: digest ")
    assert lines[start + 2] == "    us-east-1: missing"
    assert "  doc-1" in lines and "  doc-0" not in lines

    # Healed, anti-entropy brings the copies together again.
    cluster.wan.do(cluster.wan.wan.heal)
    cluster.wait_converged()
    assert _meridian("status", "--config", config, "--check").returncode == 0

    cluster.kill("us-east-1")
    down = _meridian("status", "--config", config)
    assert down.returncode == 2
    row = next(line for line in down.stdout.splitlines() if line.startswith("us-east "))
    assert row.split()[1:4] == ["us-east-1", cluster["us-east-1"].url[7:], "unreachable"]
    assert "us-east-1 (http://" in down.stdout and ": unreachable: cannot connect" in down.stdout

    incomplete = _meridian("status", "--config", config, "--check")
    assert incomplete.returncode == 2
    assert "check incomplete: these nodes could not be checked:" in incomplete.stdout
    assert "  us-east-1: unreachable: cannot connect" in incomplete.stdout


def test_check_compares_each_document_on_its_holders_only(placed: Cluster) -> None:
    rng = random.Random(20)
    nodes = sorted(placed.members)
    docs = [f"doc-{i}" for i in range(20)]
    for doc_id in docs:
        _set(rng.choice(nodes), placed, doc_id, doc_id)
    holders = {doc_id: set(_holders(placed, doc_id, rng.choice(nodes))) for doc_id in docs}
    assert all(len(h) == 2 for h in holders.values())
    expected = {node: {d for d in docs if node in holders[d]} for node in nodes}
    wait_for(
        lambda: all(set(placed.documents(node)) == expected[node] for node in nodes),
        timeout=30,
        what="every document on exactly its holders",
    )
    config = str(placed.config)

    checked = _meridian("status", "--config", config, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[2].split()[-4:] == ["HINTS", "HANDOFF", "TO", "PULL"]
    assert (
        f"check: 20 documents identical on their holders (40 copies on 4 nodes: {ALL_NODES})"
        in (lines)
    )
    assert "outside" not in checked.stdout and "under-replicated" not in checked.stdout

    status, report = _report("--config", config, "--check")
    assert status == 0
    check = report["check"]
    # Each document read on its 2 holders only, not on all 4 nodes.
    held = {node: len(expected[node]) for node in nodes}
    assert check["held"] == check["compared"] == held and sum(held.values()) == 2 * 20
    assert check["copies"] == 40 and check["identical"] == 20
    assert check["differences"] == check["under_replicated"] == [] and check["outside"] == {}
    for node in report["nodes"]:
        assert (node["holds_everything"], node["hints"], node["handoff_pending"]) == (False, 0, 0)

    # A holder down: its documents are compared on the other holder; the check is incomplete.
    placed.kill("ap-south-1")
    down = _meridian("status", "--config", config, "--check")
    assert down.returncode == 2, down.stdout + down.stderr
    assert "under-replicated" not in down.stdout
    copies = 40 - held["ap-south-1"]
    names = "eu-west-1, us-east-1, us-east-2"
    assert (
        f"check: 20 documents identical on their holders ({copies} copies on 3 nodes: {names})"
        in (down.stdout)
    )
    assert "  ap-south-1: unreachable: cannot connect" in down.stdout


def test_check_names_documents_a_holder_lacks(placed: Cluster) -> None:
    # "report" on a us-east node and eu-west-1; "far" on eu-west-1 only.
    with placed["us-east-1"].client() as client:
        for doc_id, regions in (("report", ["us-east", "eu-west"]), ("far", ["eu-west"])):
            answer = client.put(f"/v1/docs/{doc_id}/placement", json={"regions": regions})
            assert answer.status_code == 200, answer.text
    (us_holder,) = set(_holders(placed, "report")) - {"eu-west-1"}
    assert _holders(placed, "far") == ["eu-west-1"]
    config = str(placed.config)

    # eu-west's peer links cut (its HTTP stays reachable): eu-west-1 never gets these writes,
    # and the write to "far", whose only holder is cut off, is kept at us-east-1 as a hint.
    placed.wan.do(lambda: placed.wan.wan.isolate("eu-west"))
    with placed["us-east-1"].client() as client:
        wait_for(
            lambda: all(
                p["state"] != "up"
                for p in client.get("/v1/cluster").json()["peers"]
                if p["node"] == "eu-west-1"
            ),
            what="us-east-1's link to eu-west-1 down",
        )
    _set("us-east-1", placed, "report", 1)
    _set("us-east-1", placed, "far", 1)
    assert "far" in placed.documents("us-east-1")

    status, report = _report("--config", config, "--check")
    assert status == 1, report["check"]
    check = report["check"]
    assert check["under_replicated"] == [
        {"id": "far", "has": [], "lacks": ["eu-west-1"], "outside": ["us-east-1"]},
        {"id": "report", "has": [us_holder], "lacks": ["eu-west-1"], "outside": []},
    ]
    assert [d["id"] for d in check["differences"]] == ["report"]
    assert check["outside"] == {"us-east-1": ["far"]} and check["identical"] == 0
    hints = {node["node"]: node["hints"] for node in report["nodes"]}
    assert hints == {"us-east-1": 1, "us-east-2": 0, "eu-west-1": 0, "ap-south-1": 0}
    for node in report["nodes"]:
        assert node["handoff_pending"] == node["cluster"]["placement"]["handoff"]["pending"]

    shown = _meridian("status", "--config", config, "--check")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    row = next(line for line in lines if line.startswith("us-east ") and "us-east-1" in line)
    assert row.split()[-3] == "1"  # HINTS: "far", waiting for its hand-off
    start = lines.index(
        f"check: 1 of 2 documents differ between 4 nodes ({ALL_NODES}), each on its holders:"
    )
    assert lines[start + 1 : start + 3] == ["  report", "    eu-west-1: missing"]
    assert lines[start + 3].startswith(f"    {us_holder}: digest ")
    assert lines[start + 4 :] == [
        "2 of 2 documents under-replicated: some of their holders lack a copy:",
        "  far: on none of its holders; missing on eu-west-1; outside its holders on us-east-1",
        f"  report: on {us_holder}; missing on eu-west-1",
        "1 copy outside its holders, being handed off (hints, surplus copies):",
        "  us-east-1: far",
    ]

    # Healed: anti-entropy brings "report" to eu-west-1, and the hint is handed off.
    placed.wan.do(placed.wan.wan.heal)
    wait_for(
        lambda: (
            {"report", "far"} <= set(placed.documents("eu-west-1"))
            and "far" not in placed.documents("us-east-1")
        ),
        timeout=60,
        what="eu-west-1 repaired and the hint handed off",
    )
    healed = _meridian("status", "--config", config, "--check")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert f"check: 2 documents identical on their holders (3 copies on 4 nodes: {ALL_NODES})" in (
        healed.stdout
    )


def test_a_node_with_placement_off_holds_every_document(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, PLACED, placement=PLACEMENT)
    # The previous release (no placement): it holds every document, and is sent every one.
    cluster.node_args["ap-south-1"] = ["--max-protocol-version", "2"]
    try:
        cluster.start().wait_links_up()
        rng = random.Random(2)
        docs = [f"doc-{i}" for i in range(10)]
        for doc_id in docs:
            _set(rng.choice(["us-east-1", "us-east-2", "eu-west-1"]), cluster, doc_id, doc_id)
        holders = {doc_id: set(_holders(cluster, doc_id)) | {"ap-south-1"} for doc_id in docs}
        wait_for(
            lambda: all(
                {d for d in docs if node in holders[d]} <= set(cluster.documents(node))
                for node in cluster.members
            ),
            timeout=30,
            what="every document on its holders and on ap-south-1",
        )
        config = str(cluster.config)

        status, report = _report("--config", config, "--check")
        assert status == 0, report["check"]
        check = report["check"]
        assert check["held"]["ap-south-1"] == check["compared"]["ap-south-1"] == 10
        assert check["copies"] == sum(len(h) for h in holders.values())
        assert check["under_replicated"] == [] and check["differences"] == []
        assert {n["node"]: n["holds_everything"] for n in report["nodes"]} == {
            "ap-south-1": True,
            "eu-west-1": False,
            "us-east-1": False,
            "us-east-2": False,
        }
        shown = _meridian("status", "--config", config, "--check")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert (
            "ap-south-1: placement off (an earlier release, or held back below peer protocol 3): "
            "holds every document"
        ) in shown.stdout.splitlines()
    finally:
        cluster.close()


def _auth_node(tmp_path: Path, *extra: str) -> NodeProcess:
    config = tmp_path / "auth.toml"
    config.write_text("[auth]\nrequired = true\n")
    return NodeProcess(
        tmp_path / "eu-west-1",
        config=config,
        env={"MERIDIAN_CLUSTER_SECRET": SECRET},
        extra=list(extra),
    ).start()


def test_status_sends_the_token(tmp_path: Path) -> None:
    node = _auth_node(tmp_path)
    try:
        token = create_token(SECRET.encode(), prefix="", rights=["read", "write"], ttl_seconds=600)
        with node.client() as client:
            headers = {"Authorization": f"Bearer {token}"}
            for doc_id in ("a", "b"):
                ops = {"ops": [{"op": "set", "path": ["m", "k"], "value": doc_id}]}
                assert client.patch(f"/v1/docs/{doc_id}", json=ops, headers=headers).is_success

        refused = _meridian("status", "--url", node.url)
        assert refused.returncode == 2
        assert "error: 401 missing_token" in refused.stdout

        read_only = create_token(SECRET.encode(), prefix="", rights=["read"], ttl_seconds=600)
        from_env = _meridian(
            "status", "--url", node.url, "--check", env={"MERIDIAN_TOKEN": read_only}
        )
        assert from_env.returncode == 0, from_env.stdout + from_env.stderr
        assert "check: 2 documents identical on 1 node (eu-west-1)" in from_env.stdout
        assert read_only not in from_env.stdout + from_env.stderr
    finally:
        node.close()


def test_json_logs_name_the_node_and_never_show_tokens(tmp_path: Path) -> None:
    node = _auth_node(tmp_path, "--log-format", "json", "--log-level", "info")
    token = create_token(SECRET.encode(), prefix="", rights=["read", "write"], ttl_seconds=600)
    websocket = node.url.replace("http://", "ws://")
    try:
        with connect(f"{websocket}/v1/sync/notes?token={token}") as client:
            client.recv(timeout=10 * TIMEOUT_FACTOR)
        with (
            pytest.raises(ConnectionClosed),
            connect(f"{websocket}/v1/docs/notes/events?token=not-a-token-42") as client,
        ):
            client.recv(timeout=10 * TIMEOUT_FACTOR)
        wait_for(
            lambda: sum("[accepted]" in line for line in node.output) >= 2,
            what="both WebSocket connections to be logged",
        )
    finally:
        assert node.terminate() == 0
    output = "".join(node.output)
    assert token not in output and "not-a-token-42" not in output and SECRET not in output
    events = []
    for line in node.output:
        if line.startswith("meridian: "):  # what the node prints on stdout, not a log line
            continue
        event = json.loads(line)
        assert event["node"] == "eu-west-1" and event["region"] == "eu-west", line
        assert {"time", "level", "logger", "message"} <= event.keys()
        events.append(event)
    accepted = [e["message"] for e in events if "[accepted]" in e["message"]]
    assert any("/v1/sync/notes?token=[redacted]" in message for message in accepted), accepted
    assert any("/v1/docs/notes/events?token=[redacted]" in message for message in accepted)


def _log_to(
    formatter: logging.Formatter, *filters: logging.Filter
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    for log_filter in filters:
        handler.addFilter(log_filter)
    logger = logging.getLogger(f"meridian.test.{id(stream)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_redactor_masks_tokens_query_values_and_the_secret() -> None:
    token = create_token(b"k", prefix="", rights=["read"], ttl_seconds=60)
    logger, stream = _log_to(
        JsonFormatter(), NodeContext("eu-west-1", "eu-west"), Redactor([SECRET])
    )
    logger.info("client %s sent %s", token, f"secret={SECRET}", extra={"peer": "us-east-1"})
    logger.warning('"WebSocket /v1/sync/d?x=1&token=abc.def&y=2" [accepted]', extra={"doc": "d"})
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # one line per event, the traceback included
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "client [redacted] sent secret=[redacted]"
    assert (first["node"], first["region"], first["peer"]) == ("eu-west-1", "eu-west", "us-east-1")
    assert "doc" not in first
    assert second["message"] == '"WebSocket /v1/sync/d?x=1&token=[redacted]&y=2" [accepted]'
    assert second["doc"] == "d" and second["level"] == "WARNING"
    assert "bad token [redacted]" in third["exception"] and token not in lines[2]

    text_logger, text = _log_to(TextFormatter(), Redactor())
    text_logger.info("link to %s up", "us-east-1", extra={"peer": "us-east-1", "doc": "notes"})
    text_logger.info("mrd1.%s.%s", "payload", "signature")
    first_line, second_line = text.getvalue().splitlines()
    assert first_line.endswith(
        f" INFO meridian.test.{id(text)} link to us-east-1 up peer=us-east-1 doc=notes"
    )
    assert second_line.endswith(" [redacted]")
