"""The torture run's report: the faults' timeline with the writes and the availability on
each side of every fault, the counts, how the cluster settled after the heal, memory, and one
PASS/FAIL line per check (see :mod:`app.tools.torture`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .torture_check import Op
from .torture_check_workloads import Findings
from .torture_nemesis import Fault

if TYPE_CHECKING:
    from .torture import Checked, Run, Sample

__all__ = ["Settled", "fault_sides", "memory_trend", "partition_sides", "report"]

#: How much a node's peak memory may grow from the middle to the last third of a run.
MEMORY_GROWTH = 0.25
#: The shortest run whose memory trend is judged.
TREND_MIN_SECONDS = 600.0
#: Seconds between two samples of every node's resident memory (the report says it).
MEMORY_SAMPLE_SECONDS = 5.0


def _during(run: Run, fault: Fault) -> list[Op]:
    end = fault.end if fault.end is not None else run.now()
    return [op for op in run.ops if fault.start <= op.start < end]


def partition_sides(fault: Fault, regions: dict[str, str]) -> tuple[set[str], set[str]] | None:
    """The nodes on each side of a partition fault (None for other faults)."""
    if fault.kind == "partition":
        inside = {node for node, region in regions.items() if region == fault.target}
    elif fault.kind == "bridge":
        a = fault.target.split("|")[0]
        inside = {node for node, region in regions.items() if region == a}
    elif fault.kind == "node-partition":
        inside = {fault.target}
    else:
        return None
    return inside, set(regions) - inside


def fault_sides(fault: Fault, regions: dict[str, str]) -> tuple[set[str], set[str]] | None:
    """The nodes a fault strikes and the others: a partition's sides, or the node killed,
    paused, restarted or whose disk is full (None for faults that strike every node)."""
    if (sides := partition_sides(fault, regions)) is not None:
        return sides
    if fault.target in regions:
        return {fault.target}, set(regions) - {fault.target}
    return None


def availability(ops: list[Op], side: set[str]) -> str:
    """The share of the writes sent to ``side``'s nodes that were acknowledged."""
    sent = [op for op in ops if op.node in side]
    if not sent:
        return "no writes"
    acknowledged = sum(op.outcome == "ok" for op in sent)
    return f"{100 * acknowledged / len(sent):.0f}% of {len(sent)}"


def fault_line(run: Run, fault: Fault, regions: dict[str, str]) -> str:
    """One line of the faults' timeline: the writes sent while the fault lasted, and the
    availability on each side of it."""
    during = _during(run, fault)
    outcomes = Counter(op.outcome for op in during)
    end = f"{fault.end:6.1f}" if fault.end is not None else "   -  "
    line = (
        f"  {fault.start:6.1f} - {end}  {fault.kind:<14} {fault.target:<32} "
        f"ok {outcomes['ok']}, refused {outcomes['fail']}, indeterminate {outcomes['info']}"
    )
    if (sides := fault_sides(fault, regions)) is not None:
        struck, others = sides
        line += (
            f"; acknowledged at {','.join(sorted(struck))} {availability(during, struck)}, "
            f"elsewhere {availability(during, others)}"
        )
    return line


def memory_trend(samples: list[Sample], duration: float) -> tuple[str, list[str]]:
    """Whether any node's memory grows over the run: every node's peak resident memory in the
    middle and the last third of the run (restarts reset a node's memory, so peaks over
    windows, not single samples); a growth above :data:`MEMORY_GROWTH` is a problem. Runs
    shorter than :data:`TREND_MIN_SECONDS` are not judged (the first third is warm-up)."""
    if duration < TREND_MIN_SECONDS:
        return f"not judged (runs of {TREND_MIN_SECONDS:g} s or more)", []
    third = duration / 3
    parts, problems = [], []
    for node in sorted({sample.node for sample in samples}):
        middle = [s.rss_mb for s in samples if s.node == node and third <= s.at < 2 * third]
        last = [s.rss_mb for s in samples if s.node == node and s.at >= 2 * third]
        if not middle or not last:
            continue
        growth = max(last) / max(middle) - 1
        parts.append(f"{node} {max(middle):.0f}->{max(last):.0f} MB")
        if growth > MEMORY_GROWTH:
            problems.append(f"{node} peak {max(middle):.0f} -> {max(last):.0f} MB")
    return "peak in the middle -> last third of the run: " + ", ".join(parts), problems


#: What each workload's PASS line says it checked.
PROMISES = {
    "counters": "counters: every holder's value between the acknowledged increments and those "
    "plus the indeterminate ones; every acknowledged key, none refused or unwritten",
    "text": "text: every acknowledged token exactly once on every holder, none refused, "
    "indeterminate ones at most once, nothing else in the text",
    "maps": "maps: acknowledged sets never deleted present with their value, keys of "
    "acknowledged deletes that changed the document absent, nothing refused or unwritten",
    "deletes": "deletes: one final state on every holder, no acknowledged delete undone, every "
    "acknowledged append of the final incarnation exactly once, none of an earlier one, no "
    "acknowledged append into a document re-created in a past incarnation",
    "yjs": "yjs: every token read back over HTTP or synced after the heal on every holder, "
    "none twice, none unwritten",
}


def workload_lines(findings: Findings) -> list[str]:
    """A workload's counts: per kind of request, sent: acknowledged/refused/indeterminate;
    then whatever else it counted."""
    counts = findings.counts
    kinds = [key.removesuffix(" sent") for key in counts if key.endswith(" sent")]
    parts = [
        f"{kind} {counts[kind + ' sent']}: {counts[kind + ' ok']}/{counts[kind + ' fail']}/"
        f"{counts[kind + ' info']}"
        for kind in kinds
    ]
    outcomes = {f"{kind} {suffix}" for kind in kinds for suffix in ("sent", "ok", "fail", "info")}
    parts += [f"{key} {value}" for key, value in counts.items() if key not in outcomes]
    return [f"  {findings.workload:<12} " + ", ".join(parts or ["nothing sent"])]


@dataclass(frozen=True, slots=True)
class Settled:
    """How the cluster settled after the heal."""

    #: Seconds from the heal until every node was up and every link open.
    links_up: float
    #: Seconds from then until the copies converged (the Yjs clients' last sync included),
    #: or None when they did not within ``--converge-timeout``.
    converged: float | None
    #: The peer protocol version every link should run, and the links that run another one.
    version: int
    wrong_versions: list[str]


def report(
    run: Run, checked: Checked, settled: Settled, regions: dict[str, str], history: Path
) -> tuple[list[str], bool]:
    """The report's lines, and whether every check held."""
    options = run.options
    converged = settled.converged
    peaks: dict[str, float] = {}
    for sample in run.memory:
        peaks[sample.node] = max(peaks.get(sample.node, 0.0), sample.rss_mb)
    trend, growing = memory_trend(run.memory, options.duration)
    lines = [
        f"meridian torture: seed {options.seed}, {options.duration:g} s, {options.regions} "
        f"regions x {options.nodes} nodes, {options.clients} clients, {options.documents} "
        f"documents, faults: {', '.join(options.faults) or 'none'}",
        "",
        "faults (t = seconds into the run; writes sent while each lasted):",
    ]
    one_sided: list[str] = []
    for fault in run.faults:
        lines.append(fault_line(run, fault, regions))
        if fault.kind == "disk-full":
            # The others go on while one node's disk is full.
            elsewhere = [op for op in _during(run, fault) if op.node != fault.target]
            if elsewhere and not any(op.outcome == "ok" for op in elsewhere):
                one_sided.append(f"disk-full {fault.target}: no write acknowledged elsewhere")
        sides = partition_sides(fault, regions)
        if sides is not None:
            for side in sides:
                if not any(op.node in side and op.outcome == "ok" for op in _during(run, fault)):
                    one_sided.append(f"{fault.kind} {fault.target}: none on {sorted(side)}")
    by_node = Counter((op.node, op.outcome) for op in run.ops)
    outcomes = Counter(op.outcome for op in run.ops)
    lines += [
        "",
        f"HTTP writes: {len(run.ops)} sent: {outcomes['ok']} acknowledged, {outcomes['fail']} "
        f"refused, {outcomes['info']} indeterminate",
        "  by node: "
        + ", ".join(
            f"{node} {by_node[node, 'ok']}/{by_node[node, 'fail']}/{by_node[node, 'info']}"
            for node in sorted(regions)
        )
        + " (acknowledged/refused/indeterminate)",
        "  by workload (sent: acknowledged/refused/indeterminate):",
    ]
    verdict = checked.appends
    if verdict is not None:
        sent = verdict.acknowledged + verdict.failed + verdict.indeterminate
        lines.append(
            f"  {'list-append':<12} append {sent}: "
            f"{verdict.acknowledged}/{verdict.failed}/{verdict.indeterminate} "
            f"({verdict.indeterminate_applied} indeterminate applied)"
        )
    for findings in checked.findings:
        lines += workload_lines(findings)
    lines += [*run.yjs_notes]
    lines += [
        f"read-your-writes across nodes: {run.read_backs} read back, "
        f"{run.read_back_not_reached} not reached in time (503), "
        f"{len(run.read_back_violations)} violations",
        f"after the heal: every node up and every link open in {settled.links_up:.1f} s, then "
        + (
            f"copies converged in {converged:.1f} s"
            if converged is not None
            else f"copies NOT converged within {options.converge_timeout:g} s"
        ),
        "memory (peak RSS, sampled every "
        f"{MEMORY_SAMPLE_SECONDS:g} s): "
        + ", ".join(f"{node} {peak:.0f} MB" for node, peak in sorted(peaks.items())),
        f"memory trend: {trend}",
        "",
    ]
    too_big = {n: round(m) for n, m in peaks.items() if m > options.max_rss_mb}
    target = options.converge_target
    late = converged is not None and converged > target
    checks: list[tuple[str, bool, str]] = []
    if verdict is not None:
        checks.append(
            ("list-append: every acknowledged element exactly once on every holder, nothing "
             "refused or unwritten present", verdict.ok, "; ".join(verdict.problems()))
        )  # fmt: skip
    for findings in checked.findings:
        checks.append((PROMISES[findings.workload], findings.ok, "; ".join(findings.lines())))
    checks += [
        (f"copies converged (equal digests on every holder) within {target:g} s of every "
         "link being up", converged is not None and not late,
         f"{converged:.1f} s" if late else ""),
        ("writes acknowledged on both sides of every partition, and elsewhere while a disk "
         "was full", not one_sided, "; ".join(one_sided)),
        ("read-your-writes with after= across nodes", not run.read_back_violations,
         "; ".join(run.read_back_violations[:5])),
        (f"every peer link at protocol version {settled.version} (the highest both ends "
         "speak)", not settled.wrong_versions, "; ".join(settled.wrong_versions[:5])),
        (f"every node under {options.max_rss_mb:g} MB of memory", not too_big, str(too_big)),
        ("no node's memory growing (peak of the last third of the run at most "
         f"{100 * MEMORY_GROWTH:.0f}% above the middle third's)", not growing,
         "; ".join(growing)),
    ]  # fmt: skip
    passed = True
    for name, ok, why in checks:
        lines.append(
            f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {why}" if why and not ok else "")
        )
        passed = passed and ok
    lines += ["", f"history: {history}", f"verdict: {'PASS' if passed else 'FAIL'}"]
    return lines, passed
