"""The cluster topology file, ``regions.toml``, read as a node reads it: bytes in a file through
:func:`app.config.load_config` (tomllib, then ``parse_config``), which raises ConfigError for
anything that is not a valid topology."""

from __future__ import annotations

import tempfile
from pathlib import Path

from app.config import SCHEMA, ConfigError, load_config

REPOSITORY = Path(__file__).resolve().parents[3]
_SAMPLES = {str: '"x"', bool: "true", int: "1", float: "1.5"}
# One file, rewritten for each input (load_config reads a path, as the node does).
_DIRECTORY = tempfile.TemporaryDirectory(prefix="fuzz-regions-")
_PATH = Path(_DIRECTORY.name) / "regions.toml"

#: Errors of known bugs let pass while fuzzing: none (a file that is not UTF-8 raised
#: UnicodeDecodeError until load_config turned it into a ConfigError; its crash file stays as
#: a regression test).
TOLERATED: tuple[type[Exception], ...] = ()


def seeds() -> list[bytes]:
    example = (REPOSITORY / "regions.toml").read_bytes()
    every_key = "\n".join(
        f"[{section}]\n" + "\n".join(f"{key} = {_SAMPLES[kind]}" for key, kind in keys.items())
        for section, keys in SCHEMA.items()
    )
    return [
        example,
        every_key.encode(),
        b'[cluster]\nname = "c"\n[regions.a]\nnodes = ["h:1"]\n[auth]\nrequired = false\n',
    ]


def dictionary() -> list[bytes]:
    words = {*SCHEMA, "regions", "latency", "nodes", *(k for keys in SCHEMA.values() for k in keys)}
    return [w.encode() for w in sorted(words)] + [b"[", b"]", b"[[", b" = ", b'"', b"'''"]


def test_one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        load_config(_PATH)
    except ConfigError:
        return
    except TOLERATED:
        return
