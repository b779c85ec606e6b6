"""The fuzzing runner.

    python -m tests.fuzz --list
    python -m tests.fuzz <target> [libFuzzer options] [corpus directories]
    python -m tests.fuzz --write-seeds [target ...]
    python -m tests.fuzz <target> --replay FILE [--strict]

A target run without corpus directories reads the checked-in corpus
(``tests/fuzz/corpus/<target>``) and writes what it finds to a scratch directory
(``$TMPDIR/meridian-fuzz/<target>``), so the checked-in corpus only changes through a merge
(``-merge=1``, see ``long_run.sh``). Crashes are written to ``tests/fuzz/crashes/<target>/``
(override with ``-artifact_prefix=``); the target's dictionary, if it has one, is passed as
``-dict=``. ``--write-seeds`` (re)writes the valid seeds of the targets into their corpus and
their dictionaries; files are named by the SHA-1 of their content, as libFuzzer names them.
``--replay`` runs one input through the target without atheris; ``--strict`` first empties the
target's ``TOLERATED`` (the known bugs it lets pass while fuzzing).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from . import CORPUS, CRASHES, DICTS, TARGETS

#: The packages whose code is instrumented for coverage (tomllib: the TOML parser is Python).
INSTRUMENTED = ["app", "crdt", "tomllib"]


def load(target: str) -> ModuleType:
    """The target's module, uninstrumented (for replay)."""
    return importlib.import_module(f"tests.fuzz.targets.{target}")


def write_seeds(target: str) -> int:
    module = load(target)
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for seed in module.seeds():
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    words = getattr(module, "dictionary", None)
    if words is not None:
        DICTS.mkdir(exist_ok=True)
        lines = ['"' + "".join(f"\\x{b:02x}" for b in word) + '"' for word in words()]
        (DICTS / f"{target}.dict").write_text("\n".join(lines) + "\n")
    return len(module.seeds())


def fuzz(target: str, arguments: list[str]) -> None:
    try:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        sys.exit("atheris is not installed (pip install -e '.[test]' on Linux x86_64)")
    options = [a for a in arguments if a.startswith("-")]
    directories = [a for a in arguments if not a.startswith("-")]
    merging = any(a.startswith("-merge=") for a in options)
    if not directories and not merging:
        scratch = Path(tempfile.gettempdir()) / "meridian-fuzz" / target
        scratch.mkdir(parents=True, exist_ok=True)
        directories = [str(scratch), str(CORPUS / target)]
    if not any(a.startswith("-artifact_prefix=") for a in options):
        (CRASHES / target).mkdir(parents=True, exist_ok=True)
        options.append(f"-artifact_prefix={CRASHES / target}/")
    dictionary = DICTS / f"{target}.dict"
    if dictionary.exists() and not any(a.startswith("-dict=") for a in options):
        options.append(f"-dict={dictionary}")
    with atheris.instrument_imports(include=INSTRUMENTED):
        module = load(target)
    # libFuzzer runs argv[0] through the shell for -merge=1 and -fork: it must start this runner.
    command = f"{sys.executable} -m tests.fuzz {target}"
    atheris.Setup([command, *options, *directories], module.test_one_input)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Coverage-guided fuzzing of Meridian's parsers (docs/fuzzing.md).",
        epilog="Options after the target go to libFuzzer, e.g. -runs=1000000 -max_len=4096.",
    )
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("--write-seeds", action="store_true", help="(re)write the seed corpus")
    parser.add_argument("--replay", metavar="FILE", help="run one input through the target")
    parser.add_argument("--strict", action="store_true", help="with --replay: tolerate nothing")
    parser.add_argument("target", nargs="?", choices=sorted(TARGETS))
    parsed, rest = parser.parse_known_args()
    if parsed.list:
        for name, description in TARGETS.items():
            print(f"{name:15} {description}")
    elif parsed.write_seeds:
        for name in [parsed.target] if parsed.target else TARGETS:
            print(f"{name}: {write_seeds(name)} seeds")
    elif parsed.target and parsed.replay:
        module = load(parsed.target)
        if parsed.strict:
            setattr(module, "TOLERATED", ())  # noqa: B010 (a module attribute)
        module.test_one_input(Path(parsed.replay).read_bytes())
    elif parsed.target:
        fuzz(parsed.target, rest)
    else:
        parser.error("name a target, or --list")


if __name__ == "__main__":
    main()
