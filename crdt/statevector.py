"""State vectors: for each client, how many of its changes a copy has integrated.

Encoded as Yjs does (``encodeStateVector``): a count, then ``client clock`` pairs, all lib0
variable-length unsigned integers. ``b"\\x00"`` is the empty state vector.
"""

from __future__ import annotations

from .lib0 import DecodeError, Decoder, Encoder

__all__ = ["EMPTY_STATE_VECTOR", "covers", "decode_state_vector", "encode_state_vector"]

EMPTY_STATE_VECTOR = b"\x00"


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decodes a state vector; raises :class:`~crdt.lib0.DecodeError` on malformed bytes."""
    dec = Decoder(data)
    count = dec.read_length("state vector entries", 2)
    clocks: dict[int, int] = {}
    for _ in range(count):
        client = dec.read_var_uint()
        clocks[client] = dec.read_var_uint()
    if not dec.at_end():
        raise DecodeError(f"{dec.remaining} unexpected bytes after the state vector")
    return clocks


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    enc = Encoder()
    enc.write_var_uint(len(clocks))
    for client, clock in sorted(clocks.items()):
        enc.write_var_uint(client)
        enc.write_var_uint(clock)
    return enc.to_bytes()


def covers(have: dict[int, int], want: dict[int, int]) -> bool:
    """True when a copy at ``have`` includes everything a copy at ``want`` had integrated."""
    return all(have.get(client, 0) >= clock for client, clock in want.items())
