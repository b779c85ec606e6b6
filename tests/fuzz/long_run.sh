#!/usr/bin/env bash
# The documented long run (docs/fuzzing.md): each target in turn, at the lowest priority, for
# RUNS executions (default 1,000,000), then its corpus minimised into tests/fuzz/corpus/<target>
# with libFuzzer's -merge=1. Logs and summary.tsv (executions, exec/s, cov, ft, corpus, crashes)
# go to OUT (default $TMPDIR/meridian-fuzz-long).
#
#   tests/fuzz/long_run.sh [target ...]      (all targets by default)
#   RUNS=100000 PYTHON=/path/to/venv/bin/python tests/fuzz/long_run.sh yupdate
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-.venv/bin/python}"
RUNS="${RUNS:-1000000}"
OUT="${OUT:-${TMPDIR:-/tmp}/meridian-fuzz-long}"
mkdir -p "$OUT"
if [ $# -eq 0 ]; then
    set -- $("$PYTHON" -m tests.fuzz --list | cut -d' ' -f1)
fi
[ -f "$OUT/summary.tsv" ] ||
    printf 'target\texecutions\texec_per_s\tcov\tft\tcorpus_files\tcorpus_bytes\tcrashes\tseconds\n' \
        >"$OUT/summary.tsv"

for target in "$@"; do
    work="$OUT/$target"
    mkdir -p "tests/fuzz/crashes/$target"
    crashes_before=$(ls "tests/fuzz/crashes/$target" | wc -l)
    started=$(date +%s)
    if [ -z "${MERGE_ONLY:-}" ]; then  # MERGE_ONLY=1: merge and summarise an earlier run
        rm -rf "$work"
        mkdir -p "$work"
        echo "== $target: $RUNS runs, log $OUT/$target.log"
        # libFuzzer stops at the first crash: the log says how far it got, not the exit code.
        nice -n 19 "$PYTHON" -m tests.fuzz "$target" -runs="$RUNS" -seed=1 -max_len=4096 \
            -timeout=10 -print_final_stats=1 "$work" "tests/fuzz/corpus/$target" \
            >"$OUT/$target.log" 2>&1 || true
    fi
    seconds=$(($(date +%s) - started))
    rm -rf "$work.merged"
    mkdir -p "$work.merged"
    nice -n 19 "$PYTHON" -m tests.fuzz "$target" -merge=1 "$work.merged" \
        "tests/fuzz/corpus/$target" "$work" >"$OUT/$target.merge.log" 2>&1
    if [ -n "$(ls "$work.merged")" ]; then
        rm -f tests/fuzz/corpus/"$target"/*
        cp "$work.merged"/* "tests/fuzz/corpus/$target/"
    else
        echo "$target: the merge kept nothing (see $OUT/$target.merge.log); corpus unchanged" >&2
    fi
    final=$(grep -E '^#[0-9]+' "$OUT/$target.log" | tail -1)
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$target.log")
    # A crash ends the run before the final statistics: the last status line says how far.
    [ -n "$executions" ] || executions=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$final")
    done_in=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$OUT/$target.log")
    seconds="${done_in:-$seconds}"
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$OUT/$target.log")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")
    files=$(ls "tests/fuzz/corpus/$target" | wc -l)
    bytes=$(cat "tests/fuzz/corpus/$target"/* | wc -c)
    crashes=$(($(ls "tests/fuzz/crashes/$target" | wc -l) - crashes_before))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "${executions:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$files" "$bytes" "$crashes" "$seconds" | tee -a "$OUT/summary.tsv"
done
