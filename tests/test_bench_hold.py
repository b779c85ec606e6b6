"""The pure logic of bench/bench_hold.py and bench/hold_clients.py (the benchmark itself is run
by hand): the RSS trend,
percentiles of delay histograms, close causes and the per-client delivery accounting."""

from __future__ import annotations

import array
import math
import random
import sys
from pathlib import Path
from typing import Any, cast

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bench_hold as hold  # noqa: E402
import bench_live as live  # noqa: E402
import bench_single_node as single  # noqa: E402
import hold_clients as clients  # noqa: E402
import pycrdt  # noqa: E402
from websockets.frames import Close  # noqa: E402


def test_rss_trend_leaves_out_the_warm_up() -> None:
    # Grows 50 MiB in the first minute, then flat with noise: no trend.
    samples = [(t, 500.0 + min(t, 60.0) * 50 / 60 + (t % 10) / 5) for t in range(0, 601, 5)]
    assert abs(hold.rss_trend(samples, warmup=60).slope) < 0.05
    assert hold.rss_trend(samples, warmup=0).slope > 1.0
    growing = [(float(t), 500.0 + t / 60) for t in range(0, 601, 5)]  # 1 MiB a minute
    trend = hold.rss_trend(growing, warmup=60)
    assert math.isclose(trend.slope, 1.0)
    assert (trend.points, trend.window) == (109, 540.0)
    assert math.isnan(hold.rss_trend(growing, warmup=600).slope)


def test_histogram_percentile_is_the_nearest_rank_of_the_delays() -> None:
    rng = random.Random(7)
    buckets = [round(rng.expovariate(1 / 40)) for _ in range(5001)]
    counts = hold.merge_counts([{str(b): buckets.count(b) for b in set(buckets)}])
    for q in (0, 1, 50, 99, 99.9, 100):
        expected = single.percentile(buckets, q) * hold.BUCKET_SECONDS * 1e3
        assert math.isclose(hold.histogram_percentile(counts, q), expected)
    assert math.isnan(hold.histogram_percentile({}, 50))


def test_a_disconnect_has_a_reason_only_with_a_close_code() -> None:
    assert clients.close_cause(Close(1013, "too slow; reconnect")) == (1013, "too slow; reconnect")
    assert clients.close_cause(Close(1005, ""))[0] is None
    assert clients.close_cause(None)[0] is None


def test_delivery_counts_live_updates_resyncs_and_gaps() -> None:
    raw = live.typing_updates(5, live.fanout_tokens(4))
    updates = [live.sync_frame(2, u) for u in raw]
    sends = [[10.0, 11.0, 12.0, 13.0]]

    def client() -> clients.HoldClient:
        return clients.HoldClient(0, cast(Any, None), 10.0, array.array("d", bytes(8 * 4)))

    steady, resynced = client(), client()
    for number in range(4):
        steady.receive(updates[number], sends[0][number] + 0.005)
    steady.receive(updates[3], 13.5)  # again: a duplicate
    steady.receive(b"\x01\x01\x00", 14.0)  # an empty awareness message (keep-alive)
    resynced.receive(updates[0], 10.002)
    # Reconnected: the server's step 2 holds the whole document, updates 0-2 with it.
    resynced.receive(live.sync_frame(1, pycrdt.merge_updates(*raw[:3])), 12.5)
    report = clients.delivery_report([steady, resynced], sends, start=10.0)
    assert report["expected"] == 8
    assert (report["received"], report["recovered"], report["duplicates"]) == (7, 2, 1)
    assert report["incomplete"] == [[0, 4, 3]]
    assert (steady.other_frames, steady.longest_silence) == (1, 1.0)
    delays = report["delays"]
    assert sum(delays.values()) == 5  # the 4 live of one client, 1 of the other
    assert hold.histogram_percentile(delays, 100) == 5.0
