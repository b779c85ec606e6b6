"""The phi accrual failure detector (app.replication.detector) with plain values."""

from __future__ import annotations

import math
import random

import pytest

from app.replication.detector import MIN_SAMPLES, WINDOW, PhiAccrual

SEED = random.randrange(2**32)


def fed(intervals: list[float]) -> PhiAccrual:
    detector = PhiAccrual()
    now = 100.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    return detector


def test_a_steady_link_is_suspected_at_the_floor() -> None:
    detector = fed([1.0] * 50)
    assert detector.mean() == pytest.approx(1.0)
    assert detector.phi(1.0) < 1  # on time
    assert detector.phi(2.5) > 8
    assert not detector.suspects(2.4, floor=2.5, threshold=8)
    assert detector.suspects(2.5, floor=2.5, threshold=8)


def test_an_irregular_link_waits_longer_than_the_floor() -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    # a loaded peer: heartbeats usually on time, now and then after a stall of up to 3 s
    intervals = [rng.choice([1.0, 1.0, 1.0, 0.3, 1.7, 3.0]) for _ in range(100)]
    detector = fed(intervals)
    assert not detector.suspects(3.0, floor=2.5, threshold=8)
    assert detector.suspects(15.0, floor=2.5, threshold=8)
    # phi grows with the silence
    values = [detector.phi(t) for t in (1, 2, 4, 8, 16)]
    assert values == sorted(values)


def test_too_few_heartbeats_leave_the_floor_to_decide() -> None:
    detector = fed([1.0] * (MIN_SAMPLES - 1))
    assert detector.phi(100.0) == 0.0
    assert not detector.suspects(2.0, floor=2.5, threshold=8)
    assert detector.suspects(2.5, floor=2.5, threshold=8)


def test_the_gap_between_two_links_is_not_an_interval() -> None:
    detector = fed([1.0] * 10)
    detector.link_opened()
    detector.heartbeat(10_000.0)  # the new link's first heartbeat, long after
    detector.heartbeat(10_001.0)
    assert detector.samples == 11
    assert detector.mean() == pytest.approx(1.0)


def test_the_window_keeps_the_latest_intervals() -> None:
    detector = fed([5.0] * WINDOW + [1.0] * WINDOW)
    assert detector.samples == WINDOW
    assert detector.mean() == pytest.approx(1.0)
    assert detector.phi(2.5) > 8


def test_phi_is_finite_or_infinite_but_never_an_error() -> None:
    detector = fed([1.0] * 10)
    assert math.isinf(detector.phi(1e9)) or detector.phi(1e9) > 100
    assert detector.phi(0.0) == pytest.approx(0.0, abs=1e-6)
    # a clock that went backwards is ignored
    detector.heartbeat(0.0)
    assert detector.samples == 10
