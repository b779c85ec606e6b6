"""Acknowledgement latency of the crdt engine alone (no HTTP), paced at a steady rate.

Separates the storage path (apply, group commit, compaction) from the HTTP stack measured by
bench_single_node.py. Prints p50/p99/max per run and the median of the runs.

    .venv/bin/python bench/bench_engine_latency.py [--rate 1000] [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pycrdt
from progress import Progress  # (this directory)

from crdt import StoreLimits, open_store

#: Progress on stderr (which run, how long it took); results go to stdout.
progress = Progress("engine-latency")


def make_updates(count: int, docs: int) -> list[tuple[str, bytes]]:
    """Small text edits: each of ``docs`` clients types two characters into its document."""
    clients = [pycrdt.Doc(client_id=1000 + i) for i in range(docs)]
    texts = [doc.get("body", type=pycrdt.Text) for doc in clients]
    updates = []
    for n in range(count):
        i = n % docs
        before = clients[i].get_state()
        texts[i] += "ab"
        updates.append((f"doc-{i}", clients[i].get_update(before)))
    return updates


async def run_once(rate: int, seconds: float, docs: int, compact_after: int) -> list[float]:
    updates = make_updates(int(rate * seconds), docs)
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="meridian-engine-bench-") as tmp:
        async with open_store(Path(tmp), StoreLimits(compact_after_updates=compact_after)) as store:

            async def write(doc_id: str, update: bytes, due: float) -> None:
                await store.apply_update(doc_id, update)
                latencies.append(time.perf_counter() - due)  # from when it was due: no omission

            start = time.perf_counter()
            tasks = []
            for n, (doc_id, update) in enumerate(updates):
                due = start + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(write(doc_id, update, due)))
            await asyncio.gather(*tasks)
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="writes per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compact-after", type=int, default=256)
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    p50s, p99s = [], []
    for run in progress.runs(f"{args.rate}/s for {args.seconds:g} s", args.runs):
        lat = asyncio.run(run_once(args.rate, args.seconds, args.docs, args.compact_after))
        p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
        p50s.append(p50)
        p99s.append(p99)
        worst = lat[-1] * 1000
        print(
            f"run {run + 1}: {len(lat)} writes, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {worst:.1f} ms"
        )
    print(
        f"\nengine, paced {args.rate}/s over {args.docs} docs, median of {args.runs}: "
        f"p50 {statistics.median(p50s):.2f} ms, p99 {statistics.median(p99s):.2f} ms"
    )


if __name__ == "__main__":
    main()
