"""The coverage-guided fuzz targets of tests/fuzz in the default suite (docs/fuzzing.md).

- Every target's corpus (seeds, and what the long run kept) is replayed through the target:
  plain calls, no atheris needed, so this part runs everywhere.
- Every input that ever crashed a target (tests/fuzz/crashes/<target>/) is replayed as a
  regression test, without the target's tolerance of known bugs; a known, not yet fixed bug
  is an expected failure (strict: once fixed, the test says to take it off ``KNOWN_BUGS``).
- Where atheris is installed, each target runs briefly under libFuzzer in a subprocess, from
  its corpus with a fixed seed (the same inputs every run). A crash it finds is copied into
  tests/fuzz/crashes/<target>/ and fails the test. ``FUZZ_SHORT_RUNS`` (environment) sets the
  executions per target (default 2000).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from crdt import Document
from tests.fuzz import CORPUS, CRASHES, TARGETS
from tests.fuzz.__main__ import load

REPOSITORY = Path(__file__).resolve().parent.parent
SHORT_RUNS = int(os.environ.get("FUZZ_SHORT_RUNS", "2000"))
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None
#: How long a "timeout-" crash file may take to replay (it takes milliseconds once fixed).
HANG_SECONDS = 5.0

#: Crash files of bugs reported and not yet fixed -> the bug. Their replay is an expected
#: failure; remove the entry (and the target's TOLERATED) with the fix.
KNOWN_BUGS = {
    "peer_handshake/crash-8f1272fe388b52781dc151324fe29a924b07dd82": (
        "the handshake's proofs do not sign the version a Welcome chooses: a dialer opens at "
        "a version changed in flight (3) while its acceptor speaks 1..2"
    ),
}


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_file())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target: str) -> None:
    module = load(target)
    files = _files(CORPUS / target)
    assert files, f"no corpus: python -m tests.fuzz --write-seeds {target}"
    for path in files:
        try:
            module.test_one_input(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{path.relative_to(REPOSITORY)} fails {target}") from exc


def _crashes() -> list[Any]:
    cases = []
    for target in sorted(TARGETS):
        for path in _files(CRASHES / target):
            name = f"{target}/{path.name}"
            bug = KNOWN_BUGS.get(name)
            marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
            cases.append(pytest.param(target, path, id=name, marks=marks))
    return cases


@pytest.mark.parametrize(("target", "path"), _crashes())
def test_crashes_stay_fixed(target: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.name.startswith("timeout-"):
        # A hang, possibly in native code: in a process of its own, with a deadline.
        command = [sys.executable, "-m", "tests.fuzz", target, "--replay", str(path), "--strict"]
        try:
            subprocess.run(command, cwd=REPOSITORY, check=True, timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{target} still hangs on {path.name}") from None
        return
    module = load(target)
    monkeypatch.setattr(module, "TOLERATED", (), raising=False)
    module.test_one_input(path.read_bytes())


def test_a_dropped_document_is_freed() -> None:
    """Found by the json_ops long run (its memory grew ~10 KB per input): Document subscribed
    its bound method to its pycrdt.Doc, a cycle through Yrs the collector cannot see."""
    document = Document("dropped")
    dropped = weakref.ref(document)
    del document
    gc.collect()
    assert dropped() is None


def test_a_dropped_documents_yrs_document_is_freed() -> None:
    """Found by yupdate's fourth session (~8 KB per input): pycrdt's Doc.observe keeps the
    Doc in the observer it gives Yrs; the Document drops its subscription when it goes."""
    document = Document("dropped")
    inner = weakref.ref(document._doc)
    del document
    gc.collect()
    assert inner() is None


def test_known_bugs_have_their_crash_file() -> None:
    for name in KNOWN_BUGS:
        assert (CRASHES / name).is_file(), name


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed (Linux x86_64 only)")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_run(target: str, tmp_path: Path) -> None:
    found = tmp_path / "found"
    found.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz",
            target,
            f"-runs={SHORT_RUNS}",
            "-seed=1",
            "-max_len=4096",
            "-timeout=60",
            f"-artifact_prefix={artifacts}/",
            str(found),
            str(CORPUS / target),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    kept = []
    for path in _files(artifacts):
        (CRASHES / target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, CRASHES / target / path.name)
        kept.append(f"tests/fuzz/crashes/{target}/{path.name}")
    assert result.returncode == 0 and not kept, (
        f"{target} crashed (input kept: {kept or 'none'}); libFuzzer's last words:\n"
        + "\n".join(result.stderr.splitlines()[-40:])
    )
