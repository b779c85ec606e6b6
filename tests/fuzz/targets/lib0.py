"""lib0's primitives (:class:`crdt.lib0.Decoder`) as Yjs updates, y-websocket frames and peer
frames use them, and state vectors: every read either returns a value or raises DecodeError,
never reads past the end, and what decodes re-encodes to the same value.

The input's first two bytes are the program: four reads, one per half byte (low half first,
an index into ``_READS``); the rest is the data they read, also fed whole to
:func:`~crdt.statevector.decode_state_vector`."""

from __future__ import annotations

import contextlib

from crdt.lib0 import MAX_SAFE_INTEGER, DecodeError, Decoder, Encoder
from crdt.statevector import decode_state_vector, encode_state_vector

from .._input import Input
from ._seeds import STATE_VECTOR

_READS = (
    "read_uint8",
    "read_var_uint",
    "read_var_int",
    "read_length",
    "read_bytes",
    "read_var_bytes",
    "read_var_string",
    "read_any",
)


def seeds() -> list[bytes]:
    values = [
        b"\x00",
        b"\x7f",
        b"\xff\xff\xff\xff\x0f",
        b"\x03abc",
        b"\x76\x02\x01a\x7d\x05\x01b\x75\x02\x78\x77\x01x",  # {"a": 5, "b": [true, "x"]}
        b"\x7b" + b"\x40\x09\x21\xfb\x54\x44\x2d\x18",  # float64 pi
    ]
    return [bytes([program]) + value for program in range(8) for value in values] + [
        b"\x00" + STATE_VECTOR
    ]


def test_one_input(data: bytes) -> None:
    source = Input(data)
    program = source.take(2)
    raw = source.rest()
    with contextlib.suppress(DecodeError):
        clocks = decode_state_vector(raw)
        if decode_state_vector(encode_state_vector(clocks)) != clocks:
            raise AssertionError(f"state vector {clocks} does not round-trip")
    dec = Decoder(raw)
    for step in program:
        for read in (step & 0x0F, step >> 4):
            start = dec.pos
            try:
                value = _read(dec, read % len(_READS), step)
            except DecodeError:
                return
            if not start <= dec.pos <= len(raw):
                raise AssertionError(f"{_READS[read % 8]} moved from {start} to {dec.pos}")
            _check(_READS[read % len(_READS)], value)


def _read(dec: Decoder, read: int, step: int) -> object:
    name = _READS[read]
    if name == "read_bytes":
        return dec.read_bytes(step)
    if name == "read_length":
        return dec.read_length("things", 1 + step % 3)
    return getattr(dec, name)()


def _check(name: str, value: object) -> None:
    if name in ("read_var_uint", "read_length"):
        assert isinstance(value, int)
        if not 0 <= value <= MAX_SAFE_INTEGER:
            raise AssertionError(f"{name} gave {value}")
        enc = Encoder()
        enc.write_var_uint(value)
        if Decoder(enc.to_bytes()).read_var_uint() != value:
            raise AssertionError(f"var uint {value} does not round-trip")
    elif name == "read_var_string":
        assert isinstance(value, str)
        enc = Encoder()
        enc.write_var_string(value)
        if Decoder(enc.to_bytes()).read_var_string() != value:
            raise AssertionError(f"string {value!r} does not round-trip")
