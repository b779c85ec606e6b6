"""Liveness benchmark of Meridian: false suspicions of the failure detector in a quiet run.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_liveness.py                 # 10 minutes, 3 regions x 2 nodes
    .venv/bin/python bench/bench_liveness.py --minutes 1     # quick check

A cluster of real ``python -m app serve`` processes on loopback (``meridian demo``'s
machinery: every cross-region peer link goes through the WAN emulator, 40/65/110 ms one way
with 2 ms of jitter), with **no** ``[replication]`` section — every failure-detector setting at
its default (heartbeat 1 s, ``suspect_after`` 2.5 s, ``phi_threshold`` 8, ``link_timeout``
5 s). A light paced writer (``--rate`` appends per second to random documents through random
nodes) keeps the nodes doing ordinary work. No fault is injected: every suspicion counted is
a false one. Every 2 s each node's ``GET /v1/cluster`` is read: per link, ``suspicions``,
``links_opened`` (a link that timed out and was dialled again), ``phi`` and the detector's
mean heartbeat interval. The figures: suspicions and link re-openings over the run (target:
0), the highest φ sampled, writes acknowledged and failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import load_config
from app.tools.demo_cluster import open_cluster
from bench.progress import Progress

REGIONS = {"us-east": 0, "eu-west": 1, "ap-south": 2}
LATENCY_MS = {("us-east", "eu-west"): 40, ("eu-west", "ap-south"): 65, ("us-east", "ap-south"): 110}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_topology(root: Path, nodes_per_region: int) -> Path:
    lines = ['[cluster]\nname = "liveness"\nsecret_env = "MERIDIAN_CLUSTER_SECRET"\n']
    lines.append("[placement]\nreplicas = 2\nnodes_per_region = 1\n")
    for region in REGIONS:
        nodes = ", ".join(f'"127.0.0.1:{free_port()}"' for _ in range(nodes_per_region))
        lines.append(f"[regions.{region}]\nnodes = [{nodes}]\n")
    lines.append("[latency]")
    lines += [f'"{a}:{b}" = {ms}' for (a, b), ms in LATENCY_MS.items()]
    path = root / "regions.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def writer(
    urls: list[str], rate: float, until: float, rng: random.Random, tally: dict[str, int]
) -> None:
    async with httpx.AsyncClient(timeout=15.0) as http:
        pending: set[asyncio.Task[None]] = set()
        due = time.monotonic()
        count = 0

        async def one(url: str, doc: str, value: str) -> None:
            body = {"ops": [{"op": "append", "path": ["items"], "values": [value]}]}
            try:
                answer = await http.patch(f"{url}/v1/docs/{doc}", json=body)
                tally["ok" if answer.status_code == 200 else "failed"] += 1
            except httpx.HTTPError:
                tally["failed"] += 1

        while time.monotonic() < until:
            count += 1
            task = asyncio.create_task(
                one(rng.choice(urls), f"live-{rng.randrange(200)}", f"v{count}")
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
            due += 1.0 / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await asyncio.gather(*pending)


async def sample(urls: dict[str, str], until: float, seen: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        while time.monotonic() < until:
            for node, url in urls.items():
                try:
                    view = (await http.get(f"{url}/v1/cluster")).json()
                except (httpx.HTTPError, json.JSONDecodeError):
                    seen["sample_errors"] += 1
                    continue
                for peer in view["peers"]:
                    key = f"{node}->{peer['node']}"
                    seen["suspicions"][key] = peer["suspicions"]
                    seen["links_opened"][key] = peer["links_opened"]
                    if peer.get("phi") is not None:
                        seen["max_phi"][key] = max(seen["max_phi"].get(key, 0.0), peer["phi"])
                    if peer.get("heartbeat_interval_ms") is not None:
                        seen["interval_ms"][key] = peer["heartbeat_interval_ms"]
            seen["samples"] += 1
            await asyncio.sleep(2.0)


async def run(args: argparse.Namespace, work: Path, progress: Progress) -> dict[str, Any]:
    config_path = write_topology(work, args.nodes)
    config = load_config(config_path)
    secret = secrets.token_hex(16)
    rng = random.Random(args.seed)
    async with open_cluster(config, config_path, work / "nodes", secret) as cluster:
        with progress.step("starting the cluster"):
            await cluster.wait_ready(90)
        urls = {node: n.url for node, n in cluster.nodes.items()}
        seen: dict[str, Any] = {
            "suspicions": {},
            "links_opened": {},
            "max_phi": {},
            "interval_ms": {},
            "samples": 0,
            "sample_errors": 0,
        }
        tally = {"ok": 0, "failed": 0}
        until = time.monotonic() + args.minutes * 60
        with progress.step(f"quiet run of {args.minutes:g} min at {args.rate:g} writes/s"):
            await asyncio.gather(
                writer(list(urls.values()), args.rate, until, rng, tally),
                sample(urls, until, seen),
            )
    suspicions = sum(seen["suspicions"].values())
    # every link opened once at start (counted at both ends' Peer): more is a re-dial
    reopened = sum(max(0, count - 1) for count in seen["links_opened"].values())
    return {
        "minutes": args.minutes,
        "nodes": len(urls),
        "links_observed": len(seen["suspicions"]),
        "samples": seen["samples"],
        "suspicions": suspicions,
        "suspicions_by_link": {k: v for k, v in seen["suspicions"].items() if v},
        "links_reopened": reopened,
        "max_phi_sampled": max(seen["max_phi"].values(), default=0.0),
        "heartbeat_interval_ms": {
            "min": min(seen["interval_ms"].values(), default=None),
            "max": max(seen["interval_ms"].values(), default=None),
        },
        "writes_ok": tally["ok"],
        "writes_failed": tally["failed"],
        "load_average_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the quiet run")
    parser.add_argument("--nodes", type=int, default=2, help="nodes per region (3 regions)")
    parser.add_argument("--rate", type=float, default=20.0, help="background writes per second")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    progress = Progress("liveness")
    progress.log(f"seed={args.seed}, load average {os.getloadavg()[0]:.2f}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="meridian-liveness-") as tmp:
        result = asyncio.run(run(args, Path(tmp), progress))
    result.update(
        {
            "seed": args.seed,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    verdict = "met" if result["suspicions"] == 0 and result["links_reopened"] == 0 else "MISSED"
    print(f"false suspicions: {result['suspicions']} (target 0): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
