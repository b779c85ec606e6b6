"""Load held: 10,000 y-websocket clients on one Meridian node for 10 minutes while a writer
edits their documents. Memory must stay bounded, every client must get every update, and
nobody may be disconnected without a reason.

Run from the repository root with the project's virtualenv (see bench/README.md)::

    .venv/bin/python bench/bench_hold.py            # 10,000 clients, 100 documents, 600 s
    .venv/bin/python bench/bench_hold.py --quick    # 500 clients, 20 documents, 30 s

- The node: one standalone ``python -m app serve`` on a loopback port, on a fresh data
  directory (``bench_live.MeridianNode``).
- The clients: ``bench_live``'s y-websocket clients (sync step 1/2 by hand; no awareness, no
  pings), in bench/hold_clients.py. They are opened by ``--workers`` processes (this script
  with ``--worker``), and client i follows document i mod ``--documents``. When the node
  ends a connection, the client reconnects as y-websocket does (backoff from 0.1 s, doubling
  up to 2.5 s). It then asks for the whole document again (sync step 1 with an empty state
  vector), so what it missed arrives in the server's step 2.
- The writer: this process. It sends ``POST /v1/docs/{id}/update`` open loop, paced at
  ``--rate`` updates/s in all, for ``--duration`` seconds (``bench_single_node.paced``; a
  document's updates always use the same keep-alive connection, so they stay in order).
  Update j goes to document j mod D. Each update is one Yjs client typing ``#<n>;`` at the
  end of the document's text, n being the update's number in its document, so a client
  reads from a frame's bytes which updates it holds.
- Delivery delay: from the moment the writer hands an update's request to its socket to its
  arrival at a client (``CLOCK_MONOTONIC``, the same in every process). It covers the HTTP
  request, the DuckDB commit and the fan-out. Updates a client got only through a resync
  are counted apart and not timed.
- Every 5 s: the node's RSS, open files and CPU (also the generators', the writer's and
  the rest of the machine's), and its sync clients and slow disconnections
  (``/v1/cluster``).

Checks (exit status 1 if any fails):

- every client connected and synced, and every client is open at the end;
- no silent disconnection: every connection the node ended carried a close frame with a code;
- no client went more than 30 s without a message (a y-websocket client reconnects then);
- every client holds every update of its document (live, or in a resync);
- every write was acknowledged;
- the RSS slope over the hold after ``--warmup`` is at most ``--rss-slope`` MiB/min. This is
  judged only when that window lasts 2 minutes or more.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench_live as live  # noqa: E402  (this directory)
import bench_single_node as single  # noqa: E402  (this directory)
from hold_clients import BUCKET_SECONDS, doc_id, worker_main  # noqa: E402  (this directory)
from progress import Progress  # noqa: E402  (this directory)

clock = live.clock
progress = Progress("hold")
log = progress.log

#: How often the node is sampled.
SAMPLE_SECONDS = 5.0
#: After the writer stops, how long the clients have to receive its last updates.
DRAIN_SECONDS = 30.0
#: The RSS slope is judged only over a window at least this long (shorter ones are noise).
MIN_SLOPE_WINDOW = 120.0
#: Default bound on the RSS slope after warm-up, MiB/min. The data itself grows the node by
#: well under 0.1 MiB/min (50 updates/s of ~20 bytes). 2 MiB/min over the default run is
#: ~7 bytes per delivered frame (5,000 frames/s): a leak per frame or per update shows.
RSS_SLOPE_BOUND = 2.0


@dataclass(frozen=True)
class Plan:
    clients: int
    documents: int
    rate: float  # updates/s, all documents together
    duration: float  # seconds the writer writes: the hold
    warmup: float  # seconds at the start of the hold left out of the RSS slope
    workers: int  # client processes
    rss_slope: float  # MiB/min, the bound

    @property
    def updates(self) -> int:
        return int(self.rate * self.duration)

    @property
    def lanes(self) -> int:
        """Writer connections. A divisor of the document count: document d always goes
        through lane d mod lanes, so its updates stay in order."""
        return math.gcd(self.documents, 8)

    @property
    def per_document(self) -> int:
        """Updates made for each document: enough for every request paced() may build."""
        per_lane = -(-self.updates // self.lanes)
        return -(-(per_lane * self.lanes) // self.documents)


# -- slope and percentiles ----------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    slope: float  # MiB per minute (nan with fewer than two points)
    window: float  # seconds the fitted points span
    points: int


def rss_trend(samples: Sequence[tuple[float, float]], warmup: float) -> Trend:
    """Least-squares slope of (seconds into the hold, RSS MiB) samples taken at or after
    ``warmup`` seconds, in MiB per minute."""
    kept = [(t, rss) for t, rss in samples if t >= warmup]
    if len(kept) < 2 or kept[-1][0] == kept[0][0]:
        return Trend(float("nan"), 0.0, len(kept))
    times, values = zip(*kept, strict=True)
    fit = statistics.linear_regression(times, values)
    return Trend(fit.slope * 60.0, kept[-1][0] - kept[0][0], len(kept))


def histogram_percentile(counts: Mapping[int, int], q: float) -> float:
    """The ``q``-th percentile, in ms, of delays counted per :data:`BUCKET_SECONDS` bucket;
    nearest rank, as ``bench_single_node.percentile``. nan when nothing was counted."""
    total = sum(counts.values())
    if not total:
        return float("nan")
    rank = min(total, max(1, round(q / 100 * total + 0.5)))
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return bucket * BUCKET_SECONDS * 1e3
    raise AssertionError("unreachable")


def merge_counts(parts: Iterable[Mapping[str, int]]) -> collections.Counter[int]:
    """Histograms from the workers' JSON (string keys) added up."""
    total: collections.Counter[int] = collections.Counter()
    for part in parts:
        total.update({int(bucket): count for bucket, count in part.items()})
    return total


# -- coordinator: the node, the writer, the samples ------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the hold started
    rss_mib: float
    open_files: int
    cpu: dict[str, float]  # shares of a core since the previous sample
    sync_clients: int | None  # the node's count (/v1/cluster), None if it did not answer
    disconnected_slow: int | None


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sample_node(
    node: live.MeridianNode, pids: dict[str, int], start: float, samples: list[Sample]
) -> None:
    """Samples the node every SAMPLE_SECONDS from ``start`` until cancelled; logs every
    minute."""
    watch = live.CpuWatch(pids)
    watch.start()
    for tick in itertools.count():
        await asyncio.sleep(max(0.0, start + tick * SAMPLE_SECONDS - clock()))
        shares = watch.stop() if tick else {}
        watch.start()
        try:
            clients = (await single.get_json(node.port, "/v1/cluster"))["clients"]
        except (OSError, RuntimeError, KeyError, ValueError):
            clients = {}
        sample = Sample(
            clock() - start, live.rss_mib(node.pid), open_files(node.pid), shares,
            clients.get("sync_clients"), clients.get("disconnected_slow"),
        )  # fmt: skip
        samples.append(sample)
        if tick % 12 == 0:
            log(
                f"  {sample.t:4.0f} s: node RSS {sample.rss_mib:.0f} MiB, "
                f"{sample.sync_clients} sync clients, {sample.open_files:,} open files"
                + (f", CPU {live.cpu_text(shares)}" if shares else "")
            )


async def write(
    port: int, plan: Plan, meter: single.CpuMeter
) -> tuple[single.LoadResult, list[list[float]]]:
    """The writer: paced updates for the whole hold; (its LoadResult, per document the time
    each update was handed to the socket)."""
    tokens = live.fanout_tokens(plan.per_document)
    updates = [live.typing_updates(1000 + d, tokens) for d in range(plan.documents)]
    documents = plan.documents
    lanes = [
        [
            single.post_request(doc_id(j % documents), updates[j % documents][j // documents])
            for j in range(lane, plan.lanes * -(-plan.updates // plan.lanes), plan.lanes)
        ]
        for lane in range(plan.lanes)
    ]
    sends: list[list[float]] = [[] for _ in range(plan.documents)]

    def on_send(j: int) -> None:
        sends[j % plan.documents].append(clock())

    result = await single.paced(port, lanes, plan.rate, plan.duration, meter, on_send)
    return result, sends


@dataclass
class Outcome:
    """Everything measured in one hold."""

    plan: Plan
    rss_empty: float = 0.0
    connected: int = 0
    connect_failed: int = 0
    connect_errors: list[str] = field(default_factory=list)
    connect_seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    writes: int = 0
    write_errors: int = 0
    unsent: int = 0
    ack_p50: float = 0.0
    ack_p99: float = 0.0
    write_seconds: float = 0.0
    reports: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(int(r[key]) for r in self.reports)

    @property
    def delays(self) -> collections.Counter[int]:
        return merge_counts(r["delays"] for r in self.reports)

    def delays_by_minute(self) -> dict[int, collections.Counter[int]]:
        minutes = sorted({int(m) for r in self.reports for m in r["delays_by_minute"]})
        return {
            m: merge_counts(r["delays_by_minute"].get(str(m), {}) for r in self.reports)
            for m in minutes
        }

    def disconnects(self) -> list[dict[str, Any]]:
        return [d for r in self.reports for d in r["disconnects"]]

    def silent_disconnects(self) -> int:
        return sum(
            count for r in self.reports for cause, count in r["disconnect_causes"]
            if cause.startswith("None ")
        )  # fmt: skip

    def trend(self) -> Trend:
        return rss_trend([(s.t, s.rss_mib) for s in self.samples], self.plan.warmup)


async def hold(plan: Plan, work: Path) -> Outcome:
    outcome = Outcome(plan)
    with live.running(live.MERIDIAN, work / "node", outcome.notes) as server:
        assert isinstance(server, live.MeridianNode)
        await asyncio.sleep(1.0)
        outcome.rss_empty = live.rss_mib(server.pid)
        base = server.sync_url("")
        tasks = [
            {"kind": "hold", "base": base, "docs": docs, "per_document": plan.per_document}
            for docs in live.split([i % plan.documents for i in range(plan.clients)], plan.workers)
        ]
        async with live.open_workers(tasks, script=__file__) as workers:
            with progress.step(f"connecting {plan.clients:,} clients to {plan.documents:,} docs"):
                ready = [await w.expect("ready", 900) for w in workers]
            outcome.connected = sum(r["connected"] for r in ready)
            outcome.connect_failed = sum(r["failed"] for r in ready)
            outcome.connect_errors = [e for r in ready for e in r["errors"]][:5]
            outcome.connect_seconds = max(r["seconds"] for r in ready)
            log(f"  {outcome.connected:,} connected and synced, {outcome.connect_failed:,} failed")
            pids = {"node": server.pid, **live.generator_pids(workers), "writer": os.getpid()}
            start = clock()
            sampler = asyncio.ensure_future(sample_node(server, pids, start, outcome.samples))
            with progress.step(f"holding {plan.duration:g} s, writing {plan.rate:g} updates/s"):
                meter = single.CpuMeter(server.pid)
                result, sends = await write(server.port, plan, meter)
            sampler.cancel()  # the samples cover the hold: the writes, clients connected
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            outcome.writes = sum(len(s) for s in sends)
            outcome.write_errors, outcome.unsent = result.errors, result.unsent
            outcome.ack_p50 = result.percentile(50) * 1e3
            outcome.ack_p99 = result.percentile(99) * 1e3
            outcome.write_seconds = result.elapsed
            with progress.step("draining, collecting the clients' reports"):
                for w in workers:
                    w.send({"command": "finish", "drain": DRAIN_SECONDS, "start": start,
                            "sends": [[round(t, 6) for t in s] for s in sends]})  # fmt: skip
                outcome.reports = [await w.expect("done", DRAIN_SECONDS + 300) for w in workers]
    return outcome


# -- results ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: reported, not judged

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "not judged" if self.target else ""
        return "met" if self.passed else "FAILED"


def checks(outcome: Outcome) -> list[Check]:
    plan = outcome.plan
    n = plan.clients
    samples = outcome.samples
    rss = [s.rss_mib for s in samples]
    trend = outcome.trend()
    delays = outcome.delays
    expected = outcome.total("expected")
    received = outcome.total("received")
    recovered = outcome.total("recovered")
    complete = outcome.total("complete_clients")
    open_at_end = outcome.total("open")
    silent = outcome.silent_disconnects()
    disconnects = sum(r["disconnect_count"] for r in outcome.reports)
    longest = max((r["longest_silence"] for r in outcome.reports), default=0.0)
    node_clients = [s.sync_clients for s in samples if s.sync_clients is not None]
    judged = trend.window >= MIN_SLOPE_WINDOW
    return [
        Check(
            f"clients connected and synced ({plan.documents:,} documents)",
            f"{outcome.connected:,} in {outcome.connect_seconds:.1f} s",
            f"{n:,}",
            outcome.connected == n,
        ),
        Check(
            "writer: updates acknowledged / sent",
            f"{outcome.writes - outcome.write_errors:,} / {outcome.writes:,} in "
            f"{outcome.write_seconds:.0f} s ({outcome.writes / outcome.write_seconds:.1f}/s)",
            f"{plan.updates:,}",
            outcome.write_errors == 0 and outcome.unsent == 0,
        ),
        Check("writer: ack latency p50 / p99", f"{outcome.ack_p50:.1f} / {outcome.ack_p99:.1f} ms"),
        Check(
            "node RSS empty / at hold start",
            f"{outcome.rss_empty:.0f} / {rss[0] if rss else float('nan'):.0f} MiB",
        ),
        Check(
            "node RSS max / end of hold",
            f"{max(rss, default=float('nan')):.0f} / {rss[-1] if rss else float('nan'):.0f} MiB",
        ),
        Check(
            f"node RSS slope after {plan.warmup:g} s warm-up",
            f"{trend.slope:+.2f} MiB/min ({trend.points} samples over {trend.window:.0f} s)",
            f"<= {plan.rss_slope:g} MiB/min",
            (trend.slope <= plan.rss_slope) if judged else None,
        ),
        Check(
            "clients open at the end (the node's count, lowest sample)",
            f"{open_at_end:,} ({min(node_clients, default=0):,})",
            f"{n:,}",
            open_at_end == n,
        ),
        Check(
            "disconnections: silent / with a close code",
            f"{silent:,} / {disconnects - silent:,}",
            "0 silent",
            silent == 0,
        ),
        Check(
            "longest silence of a client",
            f"{longest:.1f} s",
            f"<= {live.CLIENT_SILENCE_LIMIT:g} s",
            longest <= live.CLIENT_SILENCE_LIMIT,
        ),
        Check(
            "clients holding every update of their document",
            f"{complete:,} ({received:,} of {expected:,} deliveries; {recovered:,} by a resync)",
            f"{n:,}",
            complete == n and outcome.connected == n,
        ),
        Check(
            "delivery delay p50 / p99 / max (writer's send -> client)",
            f"{histogram_percentile(delays, 50):.1f} / {histogram_percentile(delays, 99):.1f} / "
            f"{histogram_percentile(delays, 100):.1f} ms",
        ),
        Check("node CPU, mean over the hold (share of a core)", cpu_mean(samples)),
    ]


def cpu_mean(samples: Sequence[Sample]) -> str:
    timed = [s.cpu for s in samples if s.cpu]
    if not timed:
        return "-"
    names = [name for name in timed[0] if name != "machine"]
    return ", ".join(f"{name} {statistics.fmean(c[name] for c in timed):.0%}" for name in names)


def table(rows: Sequence[Check]) -> str:
    cells = [["measurement", "value", "target", "result"]]
    cells += [[c.name, c.value, c.target, c.verdict] for c in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(outcome: Outcome) -> list[str]:
    lines = []
    by_minute = outcome.delays_by_minute()
    if by_minute:
        lines.append(
            "delivery delay p50/p99 by minute of the hold (ms): "
            + ", ".join(
                f"{m}: {histogram_percentile(c, 50):.1f}/{histogram_percentile(c, 99):.1f}"
                for m, c in by_minute.items()
            )
        )
    rss = outcome.samples
    if rss:
        per_minute = [s for s in rss if round(s.t) % 60 < SAMPLE_SECONDS]
        lines.append(
            "node RSS by minute (MiB): "
            + ", ".join(f"{s.t / 60:.0f}: {s.rss_mib:.0f}" for s in per_minute)
        )
        files = [s.open_files for s in rss]
        lines.append(f"node open files: {min(files):,}-{max(files):,}")
    causes: collections.Counter[str] = collections.Counter()
    for report in outcome.reports:
        causes.update(dict(report["disconnect_causes"]))
    if causes:
        lines.append(
            "disconnections by cause: " + "; ".join(f"{n} x {c}" for c, n in causes.most_common())
        )
    for report in outcome.reports:
        if report["incomplete_count"]:
            lines.append(
                f"clients missing updates: {report['incomplete_count']:,} in a worker; first "
                "[doc, expected, received]: " + str(report["incomplete"][:5])
            )
        if report["reconnect_failures"]:
            lines.append(f"failed reconnection attempts: {report['reconnect_failures']}")
    lines.append(
        f"reconnections {outcome.total('reconnects'):,}, duplicate deliveries "
        f"{outcome.total('duplicates'):,}, other frames (keep-alives) "
        f"{outcome.total('other_frames'):,}"
    )
    if outcome.connect_failed:
        lines.append(f"connection failures: {outcome.connect_errors}")
    return lines + [f"note: {n}" for n in outcome.notes]


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        " (with changes)" if git("status", "--porcelain") else ""
    )


def machine(work: Path) -> dict[str, str]:
    info = single.machine_info(work)
    info["nproc"] = str(os.cpu_count())
    info["uname -a"] = " ".join(platform.uname())
    info["websockets"] = single._version("websockets")
    info["commit"] = commit()
    return info


def results_json(outcome: Outcome, rows: Sequence[Check], info: dict[str, str]) -> dict[str, Any]:
    trend = outcome.trend()
    delays = outcome.delays
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "plan": asdict(outcome.plan),
        "passed": all(c.passed is not False for c in rows),
        "checks": [asdict(c) | {"verdict": c.verdict} for c in rows],
        "rss_mib": {
            "empty": outcome.rss_empty,
            "hold_start": outcome.samples[0].rss_mib if outcome.samples else None,
            "max": max((s.rss_mib for s in outcome.samples), default=None),
            "end": outcome.samples[-1].rss_mib if outcome.samples else None,
            "slope_mib_per_min": trend.slope,
            "slope_window_s": trend.window,
        },
        "delivery": {
            key: outcome.total(key)
            for key in ("expected", "received", "recovered", "complete_clients", "duplicates")
        }
        | {
            "p50_ms": histogram_percentile(delays, 50),
            "p99_ms": histogram_percentile(delays, 99),
            "max_ms": histogram_percentile(delays, 100),
            "by_minute_ms": {
                m: {"p50": histogram_percentile(c, 50), "p99": histogram_percentile(c, 99)}
                for m, c in outcome.delays_by_minute().items()
            },
        },
        "connections": {
            "connected": outcome.connected,
            "connect_seconds": outcome.connect_seconds,
            "open_at_end": outcome.total("open"),
            "disconnects": outcome.disconnects(),
            "silent_disconnects": outcome.silent_disconnects(),
            "reconnects": outcome.total("reconnects"),
        },
        "writer": {
            "sent": outcome.writes,
            "errors": outcome.write_errors,
            "unsent": outcome.unsent,
            "ack_p50_ms": outcome.ack_p50,
            "ack_p99_ms": outcome.ack_p99,
        },
        "samples": [asdict(s) for s in outcome.samples],
        "notes": outcome.notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: 500 clients, 20 documents, 30 s")
    add("--clients", type=int, default=None, help="default 10,000 (500 with --quick)")
    add("--documents", type=int, default=None, help="default 100 (20 with --quick)")
    add("--rate", type=float, default=50.0, help="updates/s, all documents (default 50)")
    add("--duration", type=float, default=None, help="seconds (default 600; 30 with --quick)")
    add("--warmup", type=float, default=None,
        help="seconds left out of the RSS slope (default 60; 10 with --quick)")  # fmt: skip
    add("--rss-slope", type=float, default=RSS_SLOPE_BOUND,
        help=f"bound on the RSS slope, MiB/min (default {RSS_SLOPE_BOUND:g})")  # fmt: skip
    add("--workers", type=int, default=2, help="client processes (default 2)")
    add("--data-root", default=None, help="where the data directory goes (default: temp)")
    add("--json", default=None, help="results file (default: in the temp directory)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        live.run_loop(worker_main())
        return 0
    quick = args.quick
    plan = Plan(
        clients=args.clients or (500 if quick else 10_000),
        documents=args.documents or (20 if quick else 100),
        rate=args.rate,
        duration=args.duration or (30.0 if quick else 600.0),
        warmup=args.warmup if args.warmup is not None else (10.0 if quick else 60.0),
        workers=args.workers,
        rss_slope=args.rss_slope,
    )
    limit = live.raise_fd_limit()
    if -(-plan.clients // plan.workers) + 1000 > limit:
        parser.error(f"the open-files limit is {limit}: use more --workers")
    if plan.clients + plan.lanes + 1000 > limit:
        parser.error(f"the open-files limit is {limit}: too low for the node's connections")
    live.check_typing_updates()
    work = Path(tempfile.mkdtemp(prefix="meridian-bench-hold-", dir=args.data_root))
    info = machine(work)
    info["open-files limit"] = str(limit)
    started = time.perf_counter()
    try:
        outcome = live.run_loop(hold(plan, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = checks(outcome)
    lines = ["Machine:", *(f"  {key}: {value}" for key, value in info.items())]
    lines += [
        "",
        f"Hold: {plan.clients:,} clients over {plan.documents:,} documents in {plan.workers} "
        f"processes, {plan.duration:g} s, writer {plan.rate:g} updates/s on {plan.lanes} "
        f"connections; benchmark took {time.perf_counter() - started:.0f} s",
        "",
        table(rows),
        "",
        "Details:",
        *(f"  {line}" for line in details(outcome)),
    ]
    print("\n".join(lines))
    path = (
        Path(args.json)
        if args.json
        else Path(tempfile.gettempdir())
        / (f"meridian-bench-hold-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    )
    path.write_text(
        json.dumps(results_json(outcome, rows, info), indent=1) + "\n", encoding="utf-8"
    )
    print(f"\nResults written to {path}")
    return 0 if all(c.passed is not False for c in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
