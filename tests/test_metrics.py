"""``GET /metrics``: Prometheus text scraped from real nodes, parsed with prometheus-client's
parser. One node in this process for requests, rejections, the engine's histograms and
WebSocket clients; two regions of real processes behind the WAN emulator for the peer series
through a partition and its healing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pycrdt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from app.http.metrics import RequestRate

from .cluster import Cluster
from .support import ThreadedNode, wait_for

OCTET = {"Content-Type": "application/octet-stream"}

#: (sample name, sorted label pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it is absent (a counter not incremented yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def update(text: str, client_id: int = 77) -> bytes:
    doc = pycrdt.Doc(client_id=client_id)
    doc.get("body", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def test_requests_rejections_and_commits_are_counted(node: ThreadedNode) -> None:
    route = "/v1/docs/{doc_id}/update"
    with node.client() as client:
        before = scrape(client)
        for index in range(3):
            answer = client.post(
                f"/v1/docs/doc-{index}/update", content=update("hi"), headers=OCTET
            )
            assert answer.status_code == 200, answer.text
        refused = client.post("/v1/docs/doc-0/update", content=b"\xff\x01garbage", headers=OCTET)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_update"
        assert client.get("/v1/docs/never-written").status_code == 404
        assert client.get("/no/such/route").status_code == 404
        after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "meridian_http_requests_total"
    assert moved(requests, route=route, method="POST", status="200") == 3
    assert moved(requests, route=route, method="POST", status="400") == 1
    assert moved(requests, route="/v1/docs/{doc_id}", method="GET", status="404") == 1
    assert moved(requests, route="unmatched", method="GET", status="404") == 1
    # Route templates only: no raw path ever becomes a label value.
    assert not any("doc-0" in v or "/no/such" in v for _, labels in after for _, v in labels)
    assert moved("meridian_http_request_duration_seconds_count", route=route, method="POST") == 4
    assert moved("meridian_rejected_total", reason="invalid_update") == 1
    assert moved("meridian_rejected_total", reason="document_not_found") == 1
    assert moved("meridian_rejected_total", reason="not_found") == 1
    # The scrape before this one is counted too, by its route.
    assert moved(requests, route="/metrics", method="GET", status="200") == 1

    assert moved("meridian_apply_duration_seconds_count") == 3
    assert moved("meridian_commit_duration_seconds_count") == 3
    assert moved("meridian_commit_batch_size_count") >= 1
    assert moved("meridian_commit_batch_size_sum") == 3
    assert value(after, "meridian_commit_batch_size_bucket", le="1024.0") == value(
        after, "meridian_commit_batch_size_count"
    )
    assert value(after, "meridian_documents_hot") == 3
    assert value(after, "meridian_documents_hot_bytes") > 0
    assert moved("meridian_storage_commits_total") >= 1
    assert value(after, "meridian_node_info", node="eu-west-1", region="eu-west", version="0.1.0")


def test_openmetrics_when_the_scraper_asks(node: ThreadedNode) -> None:
    with node.client() as client:
        response = client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_each_node_has_its_own_registry(tmp_path: Path) -> None:
    """Two nodes in one process: no clash between their metrics, and separate counts."""
    one = ThreadedNode(tmp_path / "one").start()
    two = ThreadedNode(tmp_path / "two", node_id="eu-west-2").start()
    try:
        with one.client() as client:
            client.post("/v1/docs/only-here/update", content=update("x"), headers=OCTET)
            first = scrape(client)
        with two.client() as client:
            second = scrape(client)
        assert value(first, "meridian_documents_hot") == 1
        assert value(second, "meridian_documents_hot") == 0
        assert value(second, "meridian_commit_duration_seconds_count") == 0
    finally:
        one.stop()
        two.stop()


@pytest.fixture
def counting_node(tmp_path: Path) -> Iterator[ThreadedNode]:
    """A node whose DuckDB counts are refreshed every 50 ms instead of every 30 s."""
    threaded = ThreadedNode(tmp_path / "eu-west-1")
    threaded.app.state.metrics.refresh_seconds = 0.05
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


def test_stored_documents_and_bytes_are_counted(counting_node: ThreadedNode) -> None:
    with counting_node.client() as client:
        for doc_id in ("kept", "gone"):
            client.post(f"/v1/docs/{doc_id}/update", content=update("x"), headers=OCTET)
        assert client.delete("/v1/docs/gone").status_code == 200

        def counted() -> bool:
            samples = scrape(client)
            return (
                value(samples, "meridian_documents_live") == 1
                and value(samples, "meridian_documents_tombstones") == 1
                and value(samples, "meridian_storage_stored_bytes") > 0
            )

        wait_for(counted, timeout=10, what="the periodic DuckDB counts")


def test_websocket_clients_and_refused_input(node: ThreadedNode) -> None:
    """The middleware lets WebSockets through; clients are counted by endpoint, and a
    connection closed for bad input by reason."""
    base = node.url.replace("http://", "ws://")
    with node.client() as client:
        with connect(f"{base}/v1/sync/live") as sync, connect(f"{base}/v1/docs/live/events"):
            sync.recv(timeout=10)  # sync step 1: the connection is registered
            wait_for(
                lambda: (
                    value(samples := scrape(client), "meridian_websocket_clients", endpoint="sync")
                    == 1
                    and value(samples, "meridian_websocket_clients", endpoint="events") == 1
                ),
                what="both clients counted",
            )
            sync.send("text is not the y-websocket protocol")
            with pytest.raises(Exception, match="1003"):
                while True:
                    sync.recv(timeout=10)

        def refused() -> bool:
            samples = scrape(client)
            return (
                value(
                    samples,
                    "meridian_websocket_rejected_total",
                    endpoint="sync",
                    reason="text_frame",
                )
                == 1
                and value(samples, "meridian_websocket_clients", endpoint="sync") == 0
                and value(samples, "meridian_websocket_clients", endpoint="events") == 0
            )

        wait_for(refused, what="the refused client counted and both gone")

        # An event stream asked to resume from something that is not a state vector.
        bad_since = f"{base}/v1/docs/live/events?since=%21%21"
        with connect(bad_since) as events, pytest.raises(Exception, match="1007"):
            events.recv(timeout=10)
        wait_for(
            lambda: (
                value(
                    scrape(client),
                    "meridian_websocket_rejected_total",
                    endpoint="events",
                    reason="invalid_message",
                )
                == 1
            ),
            what="the bad since= counted",
        )


def test_peer_series_through_a_partition(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, {"us-east": 1, "eu-west": 1}, latency_ms=5).start()
    try:
        cluster.wait_links_up()
        us = cluster["us-east-1"]
        peer = {"peer": "eu-west-1", "region": "eu-west"}
        with us.client() as client:

            def first_round() -> dict[str, float] | None:
                samples = scrape(client)
                if value(samples, "meridian_peer_anti_entropy_rounds_total", **peer) < 1:
                    return None
                if value(samples, "meridian_peer_rtt_seconds", **peer) <= 0:
                    return None  # no heartbeat answered yet
                return {
                    name: value(samples, name, **peer)
                    for name in ("meridian_peer_deltas_acked_total", "meridian_peer_up")
                }

            start = wait_for(first_round, timeout=30, what="a first anti-entropy round and RTT")
            assert start["meridian_peer_up"] == 1

            cluster.wan.do(lambda: cluster.wan.wan.isolate("eu-west"))
            written = 0

            def partitioned() -> bool:
                # Keep writing while the link notices the partition.
                nonlocal written
                answer = client.post(
                    f"/v1/docs/during-{written}/update", content=update("p"), headers=OCTET
                )
                assert answer.status_code == 200, answer.text
                written += 1
                samples = scrape(client)
                return (
                    value(samples, "meridian_peer_up", **peer) == 0
                    and value(samples, "meridian_peer_lag_seconds", **peer) > 0
                    and value(samples, "meridian_peer_buffered_deltas", **peer) > 0
                )

            wait_for(partitioned, timeout=30, what="the link down and the lag rising")
            rounds_at_heal = value(
                scrape(client), "meridian_peer_anti_entropy_rounds_total", **peer
            )
            cluster.wan.do(cluster.wan.wan.heal)

            def healed() -> bool:
                samples = scrape(client)
                return (
                    value(samples, "meridian_peer_up", **peer) == 1
                    and value(samples, "meridian_peer_lag_seconds", **peer) == 0
                    and value(samples, "meridian_peer_deltas_acked_total", **peer)
                    >= start["meridian_peer_deltas_acked_total"] + written
                    and value(samples, "meridian_peer_anti_entropy_rounds_total", **peer)
                    > rounds_at_heal
                )

            wait_for(healed, timeout=60, what="the link up, caught up, acked, anti-entropy ran")
            samples = scrape(client)
            assert value(samples, "meridian_peer_buffered_deltas", **peer) == 0
            assert value(samples, "meridian_peer_links_opened_total", **peer) >= 2
            assert value(samples, "meridian_peer_links_refused_total") == 0
    finally:
        cluster.close()


def test_the_request_rate_counts_the_last_ten_whole_seconds() -> None:
    now = [100.2]
    rate = RequestRate(clock=lambda: now[0])
    for _ in range(30):
        rate.note()
    assert rate.per_second() == 0.0  # the current second is not whole yet
    now[0] = 101.0
    assert rate.per_second() == 3.0
    now[0] = 111.5
    assert rate.per_second() == 0.0  # out of the window
    assert rate.total == 30
