"""``meridian torture``: the checks on plain values (a history and final copies → a verdict
that finds each kind of problem), and a short real run (node processes, the WAN emulator,
SIGKILL, SIGSTOP and partitions) that must pass."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser
from app.tools.torture import FAULTS, Sample
from app.tools.torture_check import Copy, Op, check, outcome_of
from app.tools.torture_nemesis import HELD_BACK_VERSION, held_back
from app.tools.torture_report import (
    Fault,
    availability,
    fault_sides,
    memory_trend,
    partition_sides,
)

from .support import REPO, TIMEOUT_FACTOR

SEED = random.randrange(2**32)


def op(value: str, outcome: str = "ok", doc: str = "d") -> Op:
    return Op(value, doc, "n1", outcome, 0.0, 0.1)  # type: ignore[arg-type]


def test_outcomes_from_answers() -> None:
    assert outcome_of(200) == outcome_of(202) == "ok"  # 202: durable here, level not reached
    assert outcome_of(422) == "fail"
    assert outcome_of(503) == outcome_of(504) == outcome_of(500) == "info"
    assert outcome_of(None, "connect") == "fail"  # never reached the node
    assert outcome_of(None, "ReadTimeout") == "info"


def test_a_clean_history_passes() -> None:
    ops = [op("a"), op("b"), op("c", "fail"), op("x", "info"), op("y", "info")]
    copies = {"d": {"n1": Copy(("a", "x", "b"), "h"), "n2": Copy(("b", "a", "x"), "h")}}
    verdict = check(ops, copies)
    assert verdict.ok, verdict.problems()
    assert (verdict.acknowledged, verdict.failed, verdict.indeterminate) == (2, 1, 2)
    assert verdict.indeterminate_applied == 1


def test_every_kind_of_problem_is_found() -> None:
    ops = [op("a"), op("b"), op("refused", "fail"), op("maybe", "info"), op("e", doc="e")]
    copies = {
        "d": {
            "n1": Copy(("a", "maybe", "maybe", "refused", "ghost"), "h1"),
            "n2": Copy(("a", "b"), "h2"),
        },
        "e": {"n1": Copy(None), "n2": Copy(("e",), "h3")},
    }
    verdict = check(ops, copies)
    assert not verdict.ok
    assert verdict.lost == [("d", "n1", "b")]
    assert verdict.duplicated == [("d", "n1", "maybe", 2)]
    assert verdict.refused_present == [("d", "n1", "refused")]
    assert verdict.phantoms == [("d", "n1", "ghost")]
    assert verdict.missing_copies == [("e", "n1")]
    assert set(verdict.divergent) == {"d", "e"}
    assert len(verdict.problems()) == 6
    # An element of another document is a phantom here, not a write of this one.
    assert check([op("a", doc="other")], {"d": {"n1": Copy(("a",), "h")}}).phantoms == [
        ("d", "n1", "a")
    ]


def test_partition_sides() -> None:
    regions = {"us-east-1": "us-east", "eu-west-1": "eu-west", "ap-south-1": "ap-south"}
    inside, outside = partition_sides(Fault("partition", "eu-west", 0.0), regions) or ((), ())
    assert inside == {"eu-west-1"} and outside == {"us-east-1", "ap-south-1"}
    bridge = Fault("bridge", "us-east|ap-south (both reach eu-west)", 0.0)
    assert partition_sides(bridge, regions) == ({"us-east-1"}, {"eu-west-1", "ap-south-1"})
    assert partition_sides(Fault("kill", "us-east-1", 0.0), regions) is None
    node = Fault("node-partition", "eu-west-1", 0.0)
    assert partition_sides(node, regions) == ({"eu-west-1"}, {"us-east-1", "ap-south-1"})


def test_availability_on_each_side_of_a_fault() -> None:
    regions = {"a-1": "a", "a-2": "a", "b-1": "b"}
    assert fault_sides(Fault("kill", "b-1", 0.0), regions) == ({"b-1"}, {"a-1", "a-2"})
    assert fault_sides(Fault("partition", "a", 0.0), regions) == ({"a-1", "a-2"}, {"b-1"})
    assert fault_sides(Fault("rolling", "every node, one at a time", 0.0), regions) is None
    assert fault_sides(Fault("one-way", "a->b", 0.0), regions) is None
    ops = [
        Op("1", "d", "a-1", "ok", 0.0, 0.1),
        Op("2", "d", "a-2", "info", 0.0, 0.1),
        Op("3", "d", "b-1", "fail", 0.0, 0.1),
        Op("4", "d", "a-1", "ok", 0.0, 0.1),
    ]
    assert availability(ops, {"a-1", "a-2"}) == "67% of 3"
    assert availability(ops, {"b-1"}) == "0% of 1"
    assert availability(ops, {"c-1"}) == "no writes"


def test_memory_grows_when_the_last_third_peaks_above_the_middle_one() -> None:
    def samples(node: str, rss: list[float]) -> list[Sample]:
        return [Sample(600 * i / len(rss), node, mb) for i, mb in enumerate(rss)]

    # Warm-up in the first third is not growth; restarts drop memory now and then.
    steady = samples("n1", [50, 120, 150, 148, 90, 152, 149, 100, 151])
    growing = samples("n2", [50, 120, 150, 160, 170, 180, 200, 220, 240])
    verdict, problems = memory_trend(steady + growing, 600)
    assert problems == ["n2 peak 180 -> 240 MB"]
    assert "n1 152->151 MB" in verdict
    assert memory_trend(growing, 60) == ("not judged (runs of 600 s or more)", [])


def test_the_upgrade_holds_every_node_back_only_in_runs_long_enough_for_it() -> None:
    assert held_back(FAULTS, 60) == ["--max-protocol-version", str(HELD_BACK_VERSION)]
    assert held_back(FAULTS, 25) == []
    assert held_back(("kill",), 600) == []
    # The command's default faults are all of them.
    args = build_parser().parse_args(["torture"])
    assert tuple(args.faults.split(",")) == FAULTS


def test_a_short_torture_run_passes(tmp_path: Path) -> None:
    """A real run: 3 regions of 2 nodes, every fault and every workload, 25 seconds; exit 0
    and a report that says what was checked."""
    data = tmp_path / "torture"
    command = [sys.executable, "-m", "app", "torture", "--seed", str(SEED), "--duration", "25",
               "--clients", "6", "--data", str(data)]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300 * TIMEOUT_FACTOR,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"seed={SEED}\n{output}"
    assert "verdict: PASS" in output
    assert "FAIL" not in output
    assert "0 violations" in output
    for workload in ("list-append", "counters", "text", "maps", "deletes", "yjs"):
        assert f"PASS  {workload}:" in output, output
    history = (data / "history.jsonl").read_text().splitlines()
    assert len(history) > 100, output
    assert any('"fault"' in line for line in history), output
    assert "every peer link at protocol version" in output
    assert "copies converged in" in output


@pytest.mark.parametrize(
    "args",
    [
        ["--regions", "0"],
        ["--faults", "meteor"],
        ["--duration", "0"],
        ["--clients", "0"],
        ["--workloads", "meteor"],
        ["--workloads", ""],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "torture", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 2, result.stdout + result.stderr
