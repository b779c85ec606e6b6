"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser and state machine that takes
outside input. See docs/fuzzing.md.

Each target is a module of :mod:`tests.fuzz.targets` with two functions:

- ``test_one_input(data: bytes) -> None``: feeds ``data`` to the parser; returns when the parser
  parsed it or refused it with its documented error, raises anything else (which atheris
  reports as a crash and the suite as a failure);
- ``seeds() -> list[bytes]``: valid inputs, the start of the corpus (``--write-seeds``).

Run one with ``python -m tests.fuzz <target> [libFuzzer options]``, list them with
``python -m tests.fuzz --list``. This package imports nothing from ``app`` or ``crdt``: the
runner imports a target under ``atheris.instrument_imports()`` so that their code is
instrumented, which only works for modules not yet imported.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CORPUS", "CRASHES", "DICTS", "TARGETS"]

HERE = Path(__file__).parent
#: Checked-in corpus per target: seeds and what the long run kept (minimised with -merge=1).
CORPUS = HERE / "corpus"
#: Inputs that once crashed a target, replayed by tests/test_fuzz_atheris.py.
CRASHES = HERE / "crashes"
#: libFuzzer dictionaries (tokens the mutator splices in), for the text formats.
DICTS = HERE / "dicts"

#: Target name -> what it feeds and what it expects.
TARGETS = {
    "yupdate": "Yjs v1 updates: parse_update, then Document.apply_update (DecodeError, CrdtError)",
    "lib0": "lib0 primitives (crdt.lib0.Decoder) and state vectors (DecodeError)",
    "json_ops": "PATCH bodies: parse_json, parse_operations, apply_operations "
    "(ApiError, CrdtError)",
    "sync": "y-websocket client frames: sync.decode and what the server does with each message "
    "(SyncProtocolError, AwarenessError, InvalidUpdate, CrdtError)",
    "awareness": "awareness updates through the Awareness state machine (AwarenessError); "
    "what it relays must decode",
    "peer_messages": "peer protocol frames: messages.decode (ProtocolError), re-encoding "
    "round-trips",
    "peer_handshake": "PeerProtocol fed honest, mutated and random frames in both roles: never "
    "raises, closes the link with a documented reason",
    "tokens": "access tokens: verify_token on raw and on validly signed tokens (TokenError)",
    "regions_toml": "regions.toml text through app.config.load_config (ConfigError)",
    "query_params": "since=, after= and cursor= values as the HTTP routes parse them (ApiError "
    "400, InvalidUpdate)",
}
