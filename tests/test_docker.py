"""The Docker Compose cluster, for real: build the image, ``docker compose up``, replicate
across regions through the ``wan`` container, stop a region, keep writing, start it again and
prove convergence by digests; then the guided tour of the ``demo`` service (``docker compose
run --rm demo``: ``meridian demo --attach`` cutting ap-south off through the ``wan`` control
listener), then ``docker compose down -v``.

Marked ``docker`` (deselected by default): ``pytest -m docker -s tests/test_docker.py``.
The cluster requires access tokens (``MERIDIAN_AUTH_REQUIRED=true``; the
token is made with ``meridian token create`` inside a node). Skipped, saying why, when the
``docker`` command or its engine is missing (``local-docker up`` starts one on
the project's VMs). Deadlines scale with MERIDIAN_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support import TIMEOUT_FACTOR

pytestmark = pytest.mark.docker

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "meridian-test"
IMAGE = "meridian:local"
#: Compose service -> the host URL it is published on (127.0.0.1 only).
NODES = {
    "us-east-1": "http://127.0.0.1:7101",
    "us-east-2": "http://127.0.0.1:7102",
    "eu-west-1": "http://127.0.0.1:7201",
    "ap-south-1": "http://127.0.0.1:7301",
}
REGION = {"us-east-1": "us-east", "us-east-2": "us-east", "eu-west-1": "eu-west"}
REGION["ap-south-1"] = "ap-south"


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "the docker command is not installed (run shared/tools/local-docker up as root)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s: is the engine running?"
    if info.returncode != 0:
        return f"the Docker engine is not running: {info.stderr.strip()[:200]}"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if compose.returncode != 0:
        return "the docker compose plugin (v2) is not installed"
    return None


#: The cluster runs with access tokens (MERIDIAN_AUTH_REQUIRED=true), its secret and the
#: tokens coming from the environment as docs/operations.md#docker shows.
SECRET = "docker-test-secret"
ENVIRONMENT = {
    "DOCKER_BUILDKIT": "0",
    "COMPOSE_PROGRESS": "plain",
    "MERIDIAN_CLUSTER_SECRET": SECRET,
    "MERIDIAN_AUTH_REQUIRED": "true",
}


def _run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENVIRONMENT}
    env.pop("MERIDIAN_TOKEN", None)  # the demo service signs its own from the secret
    result = subprocess.run(
        list(args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout * TIMEOUT_FACTOR,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


def _compose(*args: str, timeout: float = 300, check: bool = True) -> str:
    return _run("docker", "compose", "-p", PROJECT, *args, timeout=timeout, check=check).stdout


def _wait(condition: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Polls ``condition`` until it returns something other than None/False (connection
    errors count as not yet); raises AssertionError with the last error at the deadline."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    last: object = None
    while True:
        try:
            value = condition()
            if value is not None and value is not False:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout * TIMEOUT_FACTOR:.0f}s: {what} ({last})"
            )
        time.sleep(0.2)


def _port_in_use(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[httpx.Client]:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    busy = [url for url in NODES.values() if _port_in_use(url)]
    if busy:
        pytest.fail(f"{', '.join(busy)} already in use: stop what listens there first")
    started = time.monotonic()
    _run("docker", "build", "-t", IMAGE, ".", timeout=900)
    print(f"\n[docker] image built in {time.monotonic() - started:.1f}s")
    try:
        started = time.monotonic()
        _compose("up", "-d", "--wait", "--wait-timeout", str(int(120 * TIMEOUT_FACTOR)))
        print(f"[docker] `docker compose up -d --wait` took {time.monotonic() - started:.1f}s")
        # A token as an operator makes one: with the meridian command inside a node.
        token = _compose(
            "exec", "-T", "us-east-1", "meridian", "token", "create", "--prefix", "", timeout=60
        ).strip()
        with httpx.Client(timeout=10 * TIMEOUT_FACTOR) as anonymous:
            refused = anonymous.get(f"{NODES['us-east-1']}/v1/cluster")
            assert refused.status_code == 401, refused.text
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(timeout=10 * TIMEOUT_FACTOR, headers=headers) as client:
            yield client
    except BaseException:
        print(_compose("logs", "--no-color", "--tail", "60", check=False))
        raise
    finally:
        _compose("down", "-v", "--remove-orphans", timeout=120, check=False)


def _links_up(client: httpx.Client, service: str) -> dict[str, Any] | None:
    view = client.get(f"{NODES[service]}/v1/cluster").raise_for_status().json()
    peers = {peer["node"]: peer for peer in view["peers"]}
    if set(peers) != set(NODES) - {service} or any(p["state"] != "up" for p in peers.values()):
        return None
    return view


def _wait_linked(client: httpx.Client, services: list[str]) -> dict[str, dict[str, Any]]:
    started = time.monotonic()
    views = {
        service: _wait(
            lambda s=service: _links_up(client, s),
            timeout=60,
            what=f"{service}'s peer links up",
        )
        for service in services
    }
    print(f"[docker] peer links up on {', '.join(services)} in {time.monotonic() - started:.1f}s")
    return views


def _patch(client: httpx.Client, service: str, doc: str, ops: list[dict[str, Any]]) -> Any:
    response = client.patch(f"{NODES[service]}/v1/docs/{doc}", json={"ops": ops})
    assert response.status_code == 200, response.text
    return response.json()


def _content(client: httpx.Client, service: str, doc: str) -> Any:
    response = client.get(f"{NODES[service]}/v1/docs/{doc}")
    return response.json()["content"] if response.status_code == 200 else None


def _digests(client: httpx.Client, doc: str, services: list[str] | None = None) -> dict[str, Any]:
    """Each node's digest of ``doc`` (None where it has no copy); every node by default."""
    digests: dict[str, str | None] = {}
    for service in services or list(NODES):
        response = client.get(f"{NODES[service]}/v1/docs/{doc}", params={"digest": "true"})
        digests[service] = response.json()["digest"] if response.status_code == 200 else None
    return digests


def test_compose_latencies_match_topology() -> None:
    """Every wan proxy's latency is the [latency] of docker/regions.toml for its region pair,
    and its label names that pair (dialler's region first)."""
    topology = tomllib.loads((ROOT / "docker" / "regions.toml").read_text())
    latency = {frozenset(k.split(":")): v for k, v in topology["latency"].items()}
    compose = (ROOT / "docker-compose.yml").read_text()
    proxies = re.findall(
        r"--listen=([\w-]+):([\w-]+)@0\.0\.0\.0:(\d+)=([\w-]+):7000:(\d+)\s+# ([\w-]+) ->",
        compose,
    )
    assert len(proxies) == 5
    for from_region, to_region, port, acceptor, ms, dialer in proxies:
        assert dialer < acceptor and REGION[dialer] != REGION[acceptor]
        assert (from_region, to_region) == (REGION[dialer], REGION[acceptor])
        assert float(ms) == latency[frozenset({REGION[dialer], REGION[acceptor]})]
        assert f"--peer {acceptor}=wan:{port}" in compose
    assert "--control=0.0.0.0:9000" in compose and "--wan-control wan:9000" in compose


def test_cluster_replicates_and_converges_after_a_region_stops(cluster: httpx.Client) -> None:
    client = cluster
    for service, url in NODES.items():
        health = client.get(f"{url}/v1/health").raise_for_status().json()
        assert (health["node"], health["region"]) == (service, REGION[service])
        # The dashboard's files are in the installed package (not an editable checkout).
        page = client.get(f"{url}/").raise_for_status()
        assert "/dashboard/dashboard.js" in page.text
        script = client.get(f"{url}/dashboard/dashboard.js").raise_for_status()
        assert "drawMap" in script.text
    views = _wait_linked(client, list(NODES))
    # The cross-region links really go through the WAN emulator: the round trip from ap-south
    # to us-east is at least twice the configured 110 ms one way (jitter is 2 ms).
    rtt = _wait(
        lambda: next(
            p["rtt_ms"]
            for p in client.get(f"{NODES['ap-south-1']}/v1/cluster").json()["peers"]
            if p["node"] == "us-east-1"
        ),
        timeout=30,
        what="an RTT measured from ap-south-1 to us-east-1",
    )
    print(f"[docker] RTT ap-south-1 -> us-east-1: {rtt} ms (110 ms each way emulated)")
    assert rtt >= 200, views["ap-south-1"]["peers"]

    # Write in one region, read in another.
    written = _patch(
        client, "us-east-1", "cart", [{"op": "append", "path": ["items"], "values": ["tea"]}]
    )
    started = time.monotonic()
    _wait(
        lambda: _content(client, "ap-south-1", "cart") == {"items": ["tea"]},
        timeout=30,
        what="the write of us-east-1 on ap-south-1",
    )
    print(f"[docker] us-east-1 -> ap-south-1: seen after {time.monotonic() - started:.3f}s")
    response = client.get(
        f"{NODES['eu-west-1']}/v1/docs/cart", params={"after": written["state_vector"]}
    )
    assert response.json()["content"] == {"items": ["tea"]}

    # A region goes away; the others keep accepting writes and replicating among themselves.
    started = time.monotonic()
    _compose("stop", "ap-south-1", timeout=60)
    print(f"[docker] `docker compose stop ap-south-1` took {time.monotonic() - started:.1f}s")
    for i, service in enumerate(["us-east-1", "eu-west-1", "us-east-2"] * 3):
        _patch(
            client,
            service,
            "cart",
            [{"op": "append", "path": ["items"], "values": [f"{service}#{i}"]}],
        )
    _patch(
        client,
        "eu-west-1",
        "offline",
        [{"op": "set", "path": ["notes", "m"], "value": "while down"}],
    )
    online = ["us-east-1", "us-east-2", "eu-west-1"]
    _wait(
        lambda: len({str(d) for d in _digests(client, "cart", online).values()}) == 1,
        timeout=30,
        what="the running regions to converge while ap-south-1 is stopped",
    )
    assert len(_content(client, "us-east-2", "cart")["items"]) == 10

    # The region comes back and catches up (deltas redelivered, anti-entropy).
    started = time.monotonic()
    _compose("start", "ap-south-1", timeout=60)
    _wait(
        lambda: client.get(f"{NODES['ap-south-1']}/v1/health").status_code == 200,
        timeout=60,
        what="ap-south-1 healthy again",
    )
    _wait_linked(client, list(NODES))
    for doc in ("cart", "offline"):
        digests = _wait(
            lambda d=doc: (
                found
                if None not in (found := _digests(client, d)).values()
                and len(set(found.values())) == 1
                else None
            ),
            timeout=60,
            what=f"every copy of {doc!r} identical",
        )
        print(f"[docker] {doc}: one digest on all four nodes: {next(iter(digests.values()))}")
    print(f"[docker] ap-south-1 restarted and converged in {time.monotonic() - started:.1f}s")
    assert _content(client, "ap-south-1", "offline") == {"notes": {"m": "while down"}}
    assert len(_content(client, "ap-south-1", "cart")["items"]) == 10


def _wan_status() -> dict[str, Any]:
    out = _compose(
        "exec", "-T", "wan", "python", "-m", "app.tools.wan_service",
        "--control", "127.0.0.1:9000", "--send", "status",
        timeout=60,
    )  # fmt: skip
    status: dict[str, Any] = json.loads(out)
    return status


def test_demo_service_tours_the_compose_cluster(cluster: httpx.Client) -> None:
    """``docker compose run --rm demo``: the tour of ``meridian demo`` against the running
    nodes, the partition made through the ``wan`` control listener; the cluster is left
    running with nothing cut."""
    labelled = sorted(tuple(link["regions"]) for link in _wan_status()["links"])
    assert labelled == sorted(
        [("ap-south", "eu-west"), *[("ap-south", "us-east")] * 2, *[("eu-west", "us-east")] * 2]
    )
    _wait_linked(cluster, list(NODES))
    started = time.monotonic()
    result = _run(
        "docker", "compose", "-p", PROJECT, "run", "--rm", "-T", "demo",
        timeout=300, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    out = result.stdout
    print(out)
    print(f"[docker] `docker compose run --rm demo` took {took:.1f}s")
    assert result.returncode == 0, out + result.stderr
    assert "attached to cluster 'meridian-docker' of /etc/meridian/regions.toml" in out
    assert "4 nodes healthy" in out and "6 peer links up" in out
    assert re.search(r"ap-south-1 \d+ ms \(WAN 110 ms\)", out), out
    assert "NOT seen on us-east-1, us-east-2, eu-west-1 within" in out, out
    assert "NOT seen on ap-south-1 within" in out, out
    assert "link down on both ends" in out, out
    assert re.search(r"every copy identical after \d", out), out
    assert re.search(r"all \d+ copies identical \(\d+ documents, each on its holders\)", out), out
    assert "the cluster is left running, its WAN healed" in out
    status = _wan_status()
    assert status["isolated"] == [] and status["cut"] == []
    _wait_linked(cluster, list(NODES))
