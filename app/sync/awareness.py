"""Awareness (presence, cursors) of one document's clients, as y-protocols' awareness does it:
never persisted, relayed to every client of the document on every node, expired after 30 s
without renewal.

An awareness update is a var uint count, then for each client: var uint client id, var uint
clock, var string JSON state (``null`` when the client left). A state replaces another of the
same client when its clock is higher (or equal, to mark it removed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from crdt.lib0 import DecodeError, Decoder, Encoder

__all__ = ["OUTDATED_SECONDS", "Awareness", "AwarenessError", "decode_update", "encode_update"]

#: A state not renewed for this long is dropped (y-protocols' outdatedTimeout).
OUTDATED_SECONDS = 30.0
#: Largest JSON state of one client, in bytes.
MAX_STATE_BYTES = 64 * 1024

Entry = tuple[int, int, str]


class AwarenessError(ValueError):
    """Bytes that are not an awareness update."""


def decode_update(data: bytes) -> list[Entry]:
    dec = Decoder(data)
    try:
        entries = []
        for _ in range(dec.read_length("awareness entries", 3)):
            client = dec.read_var_uint()
            clock = dec.read_var_uint()
            length = dec.read_var_uint()
            if length > MAX_STATE_BYTES:
                raise AwarenessError(
                    f"awareness state of {length} bytes, at most {MAX_STATE_BYTES}"
                )
            raw = dec.read_bytes(length)
            state = raw.decode("utf-8")
            json.loads(state)
            entries.append((client, clock, state))
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, AwarenessError):
            raise
        raise AwarenessError(f"not an awareness update: {exc}") from None
    if not dec.at_end():
        raise AwarenessError("bytes after the awareness update")
    return entries


def encode_update(entries: list[Entry]) -> bytes:
    enc = Encoder()
    enc.write_var_uint(len(entries))
    for client, clock, state in entries:
        enc.write_var_uint(client)
        enc.write_var_uint(clock)
        enc.write_var_string(state)
    return enc.to_bytes()


@dataclass(slots=True)
class _State:
    clock: int
    state: str
    updated: float
    #: Who it came from: a local connection or a peer node's id (removed with it).
    owner: object


class Awareness:
    """The awareness states of one document's clients."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[int, _State] = {}

    def __len__(self) -> int:
        return sum(1 for s in self._states.values() if s.state != "null")

    def apply(self, update: bytes, owner: object) -> bytes | None:
        """Applies an update (raises AwarenessError); returns the update of what changed, to
        pass on to the others, or None when nothing did."""
        now = self._clock()
        changed: list[Entry] = []
        for client, clock, state in decode_update(update):
            current = self._states.get(client)
            newer = current is None or clock > current.clock
            removal = current is not None and clock == current.clock and state == "null"
            if newer or (removal and current is not None and current.state != "null"):
                self._states[client] = _State(clock, state, now, owner)
                changed.append((client, clock, state))
            elif current is not None and clock == current.clock:
                current.updated = now  # a renewal
        return encode_update(changed) if changed else None

    def encode_all(self) -> bytes | None:
        """Every known (non-removed) state, or None when there is none."""
        entries = [(c, s.clock, s.state) for c, s in self._states.items() if s.state != "null"]
        return encode_update(entries) if entries else None

    def remove_owner(self, owner: object) -> bytes | None:
        """Marks the states that came from ``owner`` (a closed connection) removed; returns
        the removal update to pass on."""
        removed: list[Entry] = []
        now = self._clock()
        for client, state in self._states.items():
            if state.owner is owner and state.state != "null":
                state.clock += 1
                state.state = "null"
                state.updated = now
                removed.append((client, state.clock, "null"))
        return encode_update(removed) if removed else None

    def expire(self) -> None:
        """Forgets states not renewed for OUTDATED_SECONDS (clients time them out too)."""
        cutoff = self._clock() - OUTDATED_SECONDS
        for client in [c for c, s in self._states.items() if s.updated < cutoff]:
            del self._states[client]
