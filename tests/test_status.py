"""``meridian status`` against real clusters, and the logs of ``meridian serve``: JSON lines
naming the node, and no token or secret in them."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.auth import create_token
from app.logs import JsonFormatter, NodeContext, Redactor, TextFormatter

from .cluster import Cluster
from .support import TIMEOUT_FACTOR, NodeProcess, run_meridian, wait_for

SECRET = "status-test-secret-0123"


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
