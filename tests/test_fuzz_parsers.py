"""Every parser of outside input, fuzzed with hypothesis: random and mutated input either
parses or raises the parser's documented error — never anything else (which would be a 500,
a dropped peer link or a crash).

Mutations start from valid values (a real Yjs update, a peer message, a placement record,
an operations body), so the fuzzer gets past the first byte. ``FUZZ_EXAMPLES`` (environment)
raises the number of examples per parser for a longer, randomised run (default 300, the same
examples every run)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth import TokenError, create_token, verify_token
from app.cluster import placement
from app.cluster.catalog import decode_record, encode_record
from app.cluster.membership import MemberEntry, Membership
from app.cluster.placement import (
    PlacementError,
    PlacementRecord,
    Stamp,
    Topology,
    resolve_request,
    with_follower,
    with_home,
)
from app.codec import close_reason, decode_base64
from app.config import ConfigError, parse_config
from app.errors import MeridianError
from app.replication import messages as m
from app.sync import protocol as sync
from app.sync.awareness import AwarenessError, decode_update
from crdt import CrdtError, Document
from crdt.lib0 import DecodeError
from crdt.ops import apply_operations, parse_operations
from crdt.statevector import decode_state_vector
from crdt.yupdate import parse_update
from tests.fuzz.targets._seeds import UPDATES

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    # The default run is the same every time (the suite stays deterministic); a longer run
    # (FUZZ_EXAMPLES set) explores new input each time and prints any failing example.
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Any JSON value, a few levels deep.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with random bytes flipped, cut, inserted or repeated."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "set"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if action == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif action == "cut":
                del data[at : at + draw(st.integers(1, 8))]
            elif action == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif action == "repeat" and data:
                data[at:at] = data[at : at + draw(st.integers(1, 16))]
            elif data:
                data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        return bytes(data)

    return mutate()


# -- Yjs updates and state vectors ------------------------------------------------------------


@FUZZ
@given(st.sampled_from(UPDATES).flatmap(mutated) | st.binary(max_size=64))
def test_updates_are_refused_cleanly_or_applied(data: bytes) -> None:
    """What a client or peer sends as an update: parse_update says DecodeError, or the
    document applies it or refuses it with a CrdtError — a Yrs panic included."""
    with contextlib.suppress(DecodeError):
        parse_update(data)
    document = Document("fuzzed")
    document.apply_update(UPDATES[0])
    try:
        document.apply_update(data)
    except CrdtError:
        return
    document.to_json()
    document.digest()


@FUZZ
@given(st.binary(max_size=40) | mutated(b"\x02\x07\x05\xe8\x07\x02"))
def test_state_vectors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_state_vector(data)
    document = Document("fuzzed")
    document.apply_update(UPDATES[-1])
    with contextlib.suppress(CrdtError):
        document.encode_state(data)


@FUZZ
@given(st.text(max_size=60))
def test_base64_fields(value: str) -> None:
    with contextlib.suppress(MeridianError):
        decode_base64(value, "state vector")


# -- JSON operations --------------------------------------------------------------------------

_OPS = {"ops": [{"op": "append", "path": ["a"], "values": [1, {"x": [2]}]}]}


@FUZZ
@given(
    json_values
    | st.builds(
        lambda ops: {"ops": ops},
        st.lists(
            st.fixed_dictionaries(
                {
                    "op": st.sampled_from(
                        [
                            "set",
                            "delete",
                            "insert_text",
                            "delete_text",
                            "insert",
                            "append",
                            "remove",
                            "nope",
                        ]
                    ),
                    "path": st.lists(st.text(max_size=3) | st.integers(-2, 5), max_size=4),
                },
                optional={
                    "value": json_values,
                    "values": st.lists(json_values, max_size=3) | json_values,
                    "index": st.integers(-2, 10) | json_values,
                    "length": st.integers(-2, 10) | json_values,
                    "text": st.text(max_size=5) | json_values,
                },
            ),
            max_size=4,
        ),
    )
)
def test_operations(body: Any) -> None:
    try:
        ops = parse_operations(body, max_operations=100)
    except CrdtError:
        return
    document = Document("fuzzed")
    document.apply_update(UPDATES[-1])
    try:
        update = apply_operations(document, ops, client_id=11)
    except CrdtError:
        return
    document.apply_update(update)
    json.dumps(document.to_json())


# -- peer and client protocols ----------------------------------------------------------------

_PEER_FRAMES = [
    m.encode(m.Update(3, "doc", 1, ("n1",), UPDATES[0])),
    m.encode(m.SyncStep1(1, "doc", b"\x00")),
    m.encode(m.Failure(2, "not_found", "no")),
]


@FUZZ
@given(st.sampled_from(_PEER_FRAMES).flatmap(mutated) | st.binary(max_size=64))
def test_peer_frames(frame: bytes) -> None:
    with contextlib.suppress(m.ProtocolError):
        m.decode(frame)


_SYNC_FRAMES = [
    sync.encode_sync_step1(b"\x00"),
    sync.encode_update(UPDATES[0]),
    sync.encode_awareness(b"\x01\x05\x01\x02{}"),
]


@FUZZ
@given(st.sampled_from(_SYNC_FRAMES).flatmap(mutated) | st.binary(max_size=64))
def test_client_sync_frames(frame: bytes) -> None:
    try:
        message = sync.decode(frame)
    except sync.SyncProtocolError:
        return
    if isinstance(message, sync.AwarenessMessage):
        with contextlib.suppress(AwarenessError):
            decode_update(message.update)


@FUZZ
@given(st.text(max_size=300))
def test_close_reasons_fit_a_close_frame(reason: str) -> None:
    cut = close_reason(reason)
    assert len(cut.encode()) <= 123
    assert cut == reason or (cut.endswith("...") and reason.startswith(cut[:-3]))


# -- placement, membership, tokens, configuration ---------------------------------------------

_RECORD = with_home(
    with_follower(
        PlacementRecord.new("doc", "eu-west", Stamp(5, "eu-west-1")),
        "ap-south",
        True,
        Stamp(6, "ap-south-1"),
    ),
    "ap-south",
    Stamp(7, "ap-south-1"),
)


@FUZZ
@given(
    st.just(encode_record(_RECORD)).flatmap(mutated)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda extra: json.dumps({**_RECORD.to_json(), **extra}).encode(),
        st.dictionaries(
            st.sampled_from([*placement._RECORD_KEYS, "other"]),
            json_values,
            max_size=3,
        ),
    )
)
def test_placement_records(data: bytes) -> None:
    try:
        record = decode_record(data)
    except PlacementError:
        return
    assert decode_record(encode_record(record)) == record


TOPOLOGY = Topology(("ap-south", "eu-west", "us-east"), {}, 2, 1, ())


@FUZZ
@given(
    json_values | st.dictionaries(st.sampled_from(["regions", "replicas", "pinned"]), json_values)
)
def test_placement_requests(body: Any) -> None:
    with contextlib.suppress(PlacementError):
        resolve_request(body, TOPOLOGY, "eu-west")


@FUZZ
@given(json_values)
def test_membership(data: Any) -> None:
    for parse in (MemberEntry.from_json, Membership.from_json):
        with contextlib.suppress(PlacementError):
            parse(data)


_TOKEN = create_token(b"secret", prefix="doc", rights={"read", "write"}, ttl_seconds=3600)


@FUZZ
@given(
    st.just(_TOKEN)
    .flatmap(lambda t: mutated(t.encode()))
    .map(lambda b: b.decode("utf-8", "replace"))
    | st.text(max_size=80)
)
def test_tokens(token: str) -> None:
    with contextlib.suppress(TokenError):
        verify_token(b"secret", token)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "cluster",
                "regions",
                "latency",
                "placement",
                "replication",
                "limits",
                "storage",
                "clients",
                "auth",
                "other",
            ]
        ),
        json_values,
        max_size=4,
    )
)
def test_configuration(data: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(data, "fuzzed.toml")


def test_the_seeds_are_valid() -> None:
    """The mutations start from valid input (else the fuzzer would only test refusals)."""
    for update in UPDATES:
        parse_update(update)
    for frame in _PEER_FRAMES:
        m.decode(frame)
    for frame in _SYNC_FRAMES:
        sync.decode(frame)
    assert decode_record(encode_record(_RECORD)) == _RECORD
    verify_token(b"secret", _TOKEN)
    with pytest.raises(PlacementError):
        decode_record(b"{}")
