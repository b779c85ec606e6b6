"""Copies follow readers: the decayed read counts (plain values, an injected clock), and a
region that keeps reading a document gaining a follower copy and dropping it once idle (real
node processes through the WAN emulator)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cluster.followers import FollowSettings, ReadTracker

from .cluster import Cluster
from .support import wait_for

SEED = random.randrange(2**32)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reads_gain_a_copy_at_the_threshold_with_hysteresis() -> None:
    clock = Clock()
    tracker = ReadTracker(FollowSettings(reads=10, half_life=60, idle=100), clock)
    gains = [tracker.read("d") for _ in range(12)]
    assert gains.index(True) == 9 and gains.count(True) == 1  # the 10th read, once
    clock.now += 60  # half-life: ~6 left, above a quarter of 10: no new gain yet
    assert not any(tracker.read("d") for _ in range(5))
    clock.now += 600  # decayed to nothing: armed again
    assert [tracker.read("d") for _ in range(10)][-1]


def test_slow_reads_never_gain_a_copy() -> None:
    clock = Clock()
    tracker = ReadTracker(FollowSettings(reads=10, half_life=10, idle=100), clock)
    for _ in range(1000):
        clock.now += 10  # one read per half-life: the count stays below 2
        assert not tracker.read("d")


def test_idle_follower_copies() -> None:
    clock = Clock()
    tracker = ReadTracker(FollowSettings(reads=10, half_life=60, idle=30), clock)
    assert tracker.idle(["a", "b"]) == []  # first seen now
    clock.now += 20
    tracker.touch("a")
    clock.now += 15
    assert tracker.idle(["a", "b"]) == ["b"]
    assert not ReadTracker(FollowSettings(enabled=False), clock).read("d")


def test_a_home_is_cold_when_its_region_barely_uses_it() -> None:
    clock = Clock()
    settings = FollowSettings(half_life=60, rehome_reads=5, rehome_after=100)
    tracker = ReadTracker(settings, clock)
    # Nothing is cold before the node has been up rehome_after seconds (counts start empty).
    assert not tracker.cold("d", follower_since=1_000)
    clock.now += 100
    assert tracker.cold("d", follower_since=1_000)
    # A follower copy in use for less than rehome_after does not take the home yet.
    assert not tracker.cold("d", follower_since=99)
    for _ in range(5):
        tracker.access("d")
    assert tracker.local_count("d") == 5 and not tracker.cold("d", follower_since=1_000)
    clock.now += 60  # half-life: 2.5 left
    assert tracker.local_count("d") == pytest.approx(2.5)
    assert tracker.cold("d", follower_since=1_000)
    # A steady use above the threshold keeps it: one access every 10 s settles at ~9.
    for step in range(100):
        clock.now += 10
        tracker.access("d")
        assert step < 5 or not tracker.cold("d", follower_since=1_000)
    assert tracker.local_count("d") == pytest.approx(1 / (1 - 0.5 ** (10 / 60)), rel=1e-3)
    assert not ReadTracker(FollowSettings(rehome=False), clock).cold("e", follower_since=10**6)
    assert not ReadTracker(FollowSettings(enabled=False), clock).cold("e", follower_since=10**6)


LAYOUT = {"us-east": 1, "eu-west": 1, "ap-south": 1}
#: One region per document, followers after 5 reads, homes that move within seconds.
REHOME = {
    "replicas": 1,
    "follow_reads": 5,
    "follow_half_life": 30.0,
    "follow_idle": 600.0,
    "rehome_reads": 2,
    "rehome_after": 2.0,
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    print(f"seed={SEED}")
    placement = {
        "replicas": 2,
        "follow_reads": 5,
        "follow_half_life": 30.0,
        "follow_idle": 3.0,
    }
    running = Cluster(tmp_path, LAYOUT, latency_ms=5, placement=placement, seed=SEED).start()
    try:
        running.wait_links_up()
        yield running
    finally:
        running.close()


def test_a_region_reading_a_document_gains_a_copy_and_drops_it_when_idle(
    cluster: Cluster,
) -> None:
    with cluster["eu-west-1"].client() as writer:
        first = writer.patch(
            "/v1/docs/popular", json={"ops": [{"op": "append", "path": ["items"], "values": [0]}]}
        )
        assert first.status_code == 200, first.text
        placement = writer.get("/v1/docs/popular/placement").json()
    reader_region = next(r for r in LAYOUT if r not in placement["regions"])
    reader = f"{reader_region}-1"
    with cluster[reader].client() as client:
        wait_for(
            lambda: client.get("/v1/docs/popular/placement").status_code == 200,
            what=f"the placement record at {reader}",
        )
    acknowledged = [0]
    stop = threading.Event()

    def write() -> None:
        with cluster["eu-west-1"].client() as client:
            index = 1
            while not stop.is_set():
                ops = {"ops": [{"op": "append", "path": ["items"], "values": [index]}]}
                if client.patch("/v1/docs/popular", json=ops).status_code == 200:
                    acknowledged.append(index)
                index += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        with cluster[reader].client() as client:
            served_by = []
            for _ in range(10):
                answer = client.get("/v1/docs/popular")
                assert answer.status_code == 200
                served_by.append(answer.headers["x-meridian-served-by"])
            assert served_by[0] != reader  # forwarded at first

            def followed() -> bool:
                body = client.get("/v1/docs/popular/placement").json()
                return reader in body["followers"]

            wait_for(followed, timeout=20, what=f"a follower copy at {reader}")

            def served_here() -> bool:
                answer = client.get("/v1/docs/popular")
                return answer.headers["x-meridian-served-by"] == reader

            wait_for(served_here, timeout=20, what=f"reads served at {reader}")
            # a write there is served there too: it is a copy like any other
            ops = {"ops": [{"op": "append", "path": ["items"], "values": ["from-reader"]}]}
            written = client.patch("/v1/docs/popular", json=ops)
            assert written.status_code == 200, written.text
            assert written.headers["x-meridian-served-by"] == reader
            acknowledged.append("from-reader")
        # No more reads: the copy goes idle, is dropped, and the reads go back to a holder.
        wait_for(
            lambda: "popular" not in cluster.documents(reader),
            timeout=40,
            what="the idle follower copy dropped",
        )
    finally:
        stop.set()
        thread.join(30)
    for holder in placement["holders"]:
        with cluster[holder].client() as client:

            def complete(client: httpx.Client = client) -> list[object] | None:
                view = client.get("/v1/docs/popular", params={"local": "true"})
                items = view.json()["content"]["items"] if view.status_code == 200 else []
                return items if set(items) >= set(acknowledged) else None

            items = wait_for(complete, timeout=30, what=f"every acknowledged element on {holder}")
            assert len(items) == len(set(items))


def test_a_home_moves_to_the_region_that_uses_it(tmp_path: Path) -> None:
    """A document written once in eu-west, then read and written only from ap-south: ap-south
    gains a follower copy, the cold home moves there, eu-west's copy is handed off and
    dropped, ap-south serves every request locally, and nothing acknowledged is lost."""
    cluster = Cluster(tmp_path, LAYOUT, latency_ms=5, placement=REHOME, seed=SEED).start()
    try:
        cluster.wait_links_up()
        _home_moves(cluster)
    finally:
        cluster.close()


def _home_moves(cluster: Cluster) -> None:
    def append(client: httpx.Client, value: object) -> httpx.Response:
        ops = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
        return client.patch("/v1/docs/wandering", json=ops)

    with cluster["eu-west-1"].client() as client:
        assert append(client, "born").status_code == 200
        assert client.get("/v1/docs/wandering/placement").json()["holders"] == ["eu-west-1"]
    acknowledged = ["born"]
    with cluster["ap-south-1"].client() as client:
        wait_for(
            lambda: client.get("/v1/docs/wandering/placement").status_code == 200,
            what="the placement record at ap-south-1",
        )

        def moved() -> bool:
            # Its readers and writers are here: reads gain a follower copy, writes go on.
            assert client.get("/v1/docs/wandering").status_code == 200
            answer = append(client, f"w{len(acknowledged)}")
            assert answer.status_code == 200, answer.text
            acknowledged.append(f"w{len(acknowledged)}")
            body = client.get("/v1/docs/wandering/placement").json()
            return bool(body["home"] == "ap-south" and body["holders"] == ["ap-south-1"])

        wait_for(moved, timeout=60, what="the home moved to ap-south")
        wait_for(
            lambda: "wandering" not in cluster.documents("eu-west-1"),
            timeout=30,
            what="the old home's copy dropped",
        )
        for index in range(5):
            answer = append(client, f"after-{index}")
            assert answer.headers["x-meridian-served-by"] == "ap-south-1"
            acknowledged.append(f"after-{index}")
        items = client.get("/v1/docs/wandering", params={"local": "true"}).json()["content"]
        assert sorted(items["items"]) == sorted(acknowledged)
        assert client.get("/v1/cluster").json()["placement"]["handoff"]["homes_moved"] == 0
    # The decision was the old home's, and it does not move back while nobody reads there.
    view = cluster.cluster_view("eu-west-1")["placement"]["handoff"]
    assert view["homes_moved"] == 1
    with cluster["eu-west-1"].client() as client:
        assert client.get("/v1/docs/wandering/placement").json()["home"] == "ap-south"


def test_no_home_moves_while_a_node_speaks_an_earlier_protocol(tmp_path: Path) -> None:
    """A node held at peer protocol 3 would refuse a record with a moved home: while it is
    linked (or down), homes stay where they are; once it runs version 4, the home moves."""
    cluster = Cluster(tmp_path, LAYOUT, latency_ms=5, placement=REHOME, seed=SEED)
    cluster.node_args["us-east-1"] = ["--max-protocol-version", "3"]
    cluster.start()
    try:
        cluster.wait_links_up()
        with cluster["eu-west-1"].client() as client:
            ops = {"ops": [{"op": "append", "path": ["items"], "values": ["born"]}]}
            assert client.patch("/v1/docs/held", json=ops).status_code == 200
        with cluster["ap-south-1"].client() as client:

            def home() -> str:
                assert client.get("/v1/docs/held").status_code == 200  # a read from here
                return str(client.get("/v1/docs/held/placement").json()["home"])

            wait_for(
                lambda: (
                    home() == "eu-west"
                    and client.get("/v1/docs/held/placement").json()["followers"] == ["ap-south-1"]
                ),
                timeout=30,
                what="a follower copy at ap-south-1",
            )
            # Two hand-off passes past rehome_after, reads going on: the home stays.
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                assert home() == "eu-west"
                time.sleep(0.2)
            cluster.kill("us-east-1")
            cluster.node_args["us-east-1"] = []
            cluster.start_node("us-east-1")
            cluster.wait_links_up()
            wait_for(lambda: home() == "ap-south", timeout=30, what="the home moved")
    finally:
        cluster.close()
