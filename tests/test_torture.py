"""``meridian torture``: the checks on plain values (a history and final copies → a verdict
that finds each kind of problem), and a short real run (node processes, the WAN emulator,
SIGKILL, SIGSTOP and partitions) that must pass."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from app.tools.torture import Fault, partition_sides
from app.tools.torture_check import Copy, Op, check, outcome_of

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
