"""The live fuzzer (tests/fuzz/live, docs/fuzzing.md "The live fuzzer"): its judging, and a
short run against real nodes — a fixed seed (the same requests every run) and a random one
(printed when it fails, to run again with ``python -m tests.fuzz.live --seed N``)."""

from __future__ import annotations

import random

import pytest

from tests.fuzz.live import Options, format_report, judge, run
from tests.fuzz.live.actions import Expect, Frame, HttpRequest, Outcome, WsSession
from tests.fuzz.live.base import Setting
from tests.fuzz.live.http_routes import HttpRoutes
from tests.fuzz.live.mutate import Mutator
from tests.fuzz.live.node import MODES, app_routes, log_problems
from tests.fuzz.live.seeds import Seeded
from tests.fuzz.live.ws_routes import WsRoutes

#: Batches of each mode in the short runs (the same work on any machine).
BATCHES = 5
BATCH_SIZE = 60


def _request(expect: Expect = "read", *, after: bool = False) -> HttpRequest:
    return HttpRequest(
        "GET /v1/docs/{doc_id}", b"GET", b"/v1/docs/x", [], expect=expect, after=after
    )


def test_every_route_of_the_node_has_a_generator() -> None:
    m = Mutator(random.Random(1))
    oracle = Seeded().oracle(100)
    setting = Setting("standalone", None, False, "eu-west-1", 1024, 1024)
    routes = {
        *HttpRoutes(m, setting, oracle, None).routes,
        *WsRoutes(m, setting, oracle, None).routes,
    }
    assert app_routes() <= routes
    assert {"POST /v1/docs/{doc_id}/update", "WS /v1/sync/{doc_id}", "MOUNT /docs/static"} <= routes


def test_judging_answers() -> None:
    assert judge(_request(), Outcome(statuses=[200], codes=[None])) is None
    assert "500" in (judge(_request(), Outcome(statuses=[500], codes=["internal_error"])) or "")
    # 503 after_not_reached is documented for after= only.
    after = Outcome(statuses=[503], codes=["after_not_reached"])
    assert judge(_request(after=True), after) is None
    assert judge(_request(), after) is not None
    assert judge(_request("refuse"), Outcome(statuses=[200], codes=[None])) is not None
    assert judge(_request("refuse"), Outcome(statuses=[415], codes=["x"])) is None
    assert judge(_request(), Outcome(hung="no answer")) is not None
    assert judge(_request(), Outcome(statuses=[200], codes=[None], seconds=60)) is not None
    session = WsSession("WS /v1/sync/{doc_id}", "/v1/sync/x", [], [], [])
    assert judge(session, Outcome(statuses=[101], codes=[None], close_codes=[1011])) is not None
    assert judge(session, Outcome(statuses=[101], codes=[None], close_codes=[1006])) is not None
    assert judge(session, Outcome(statuses=[101], codes=[None], close_codes=[1002])) is None
    # The known uvicorn problem: a text frame that is not UTF-8 may end with 1006.
    session.frames = [Frame("text", b"\xff")]
    assert judge(session, Outcome(statuses=[101], codes=[None], close_codes=[1006])) is None


def test_reading_the_node_log() -> None:
    lines = [
        "2026-01-01 00:00:00,000 WARNING uvicorn.error Invalid HTTP request received.\n",
        "2026-01-01 00:00:00,001 ERROR uvicorn.error Invalid UTF-8 sequence received from "
        "client.\n",
        "Traceback (most recent call last):\n",
        "UnicodeDecodeError: ...\n",
        "2026-01-01 00:00:00,002 ERROR meridian.http GET /v1/docs/x: unexpected error\n",
        "Traceback (most recent call last):\n",
    ]
    errors, warnings, known = log_problems(lines)
    assert warnings == ["uvicorn.error"]
    assert known == ["uvicorn-invalid-utf8"]
    assert len(errors) == 1 and "unexpected error" in errors[0]


def _run(seed: int, modes: tuple[str, ...]) -> None:
    report = run(
        Options(
            duration=600, seed=seed, modes=modes, batches=BATCHES, batch_size=BATCH_SIZE,
            quiet=True,
        ),
        out=lambda _: None,
    )  # fmt: skip
    if report.failure is not None:
        failure = report.failure
        pytest.fail(
            f"live fuzzing, seed {seed}, mode {failure.mode}, batch {failure.batch}: "
            f"{failure.problem}\nreproducer: {failure.reproducer}\n"
            f"again: python -m tests.fuzz.live --seed {seed} --mode {failure.mode} "
            f"--batch-size {BATCH_SIZE}\n{format_report(report)}"
        )
    assert sum(report.batches.values()) == BATCHES * len(modes)
    assert set(report.restarts) == set(modes)  # each node restarted and checked again


def test_live_fuzzing_with_a_fixed_seed() -> None:
    _run(1, MODES)


def test_live_fuzzing_with_a_random_seed() -> None:
    seed = random.randrange(2**32)
    _run(seed, (MODES[seed % len(MODES)],))
