"""lib0 binary encoding, as Yjs writes it, with every length checked before it is trusted.

Yjs updates and the y-websocket protocol are built from lib0's primitives
(https://github.com/dmonad/lib0/blob/main/encoding.js): unsigned variable-length integers
(7 bits per byte, low bits first), signed ones (6 bits in the first byte, then 7), strings as
a byte length plus UTF-8, and the self-describing ``any`` values.

:class:`Decoder` never allocates from a declared length before checking that the bytes are
there, so a hostile "one billion elements follow" costs nothing. Every failure is a
:class:`DecodeError`.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["MAX_SAFE_INTEGER", "DecodeError", "Decoder", "Encoder"]

#: lib0 stays within JavaScript's exactly representable integers.
MAX_SAFE_INTEGER = 2**53 - 1

# A nesting limit for ``any`` values: deep enough for any real document, shallow enough that a
# hostile ``[[[[...]]]]`` cannot exhaust the stack.
_MAX_ANY_DEPTH = 64


class DecodeError(ValueError):
    """The bytes do not decode: truncated, out of range, or an unknown tag."""


class Decoder:
    """Reads lib0 values from ``data``, front to back."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def read_uint8(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError(f"unexpected end of data at byte {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def read_var_uint(self) -> int:
        data, pos, end = self.data, self.pos, len(self.data)
        value = 0
        shift = 0
        while True:
            if pos >= end:
                raise DecodeError(f"truncated integer at byte {self.pos}")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 53:
                raise DecodeError(f"integer too large at byte {self.pos}")
        if value > MAX_SAFE_INTEGER:
            raise DecodeError(f"integer too large at byte {self.pos}")
        self.pos = pos
        return value

    def read_var_int(self) -> int:
        first = self.read_uint8()
        negative = bool(first & 0x40)
        value = first & 0x3F
        shift = 6
        byte = first
        while byte & 0x80:
            byte = self.read_uint8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 60:
                raise DecodeError(f"integer too large at byte {self.pos}")
        return -value if negative else value

    def read_length(self, what: str, min_bytes_each: int = 1) -> int:
        """A count of things that follow, refused when the remaining bytes cannot hold them."""
        count = self.read_var_uint()
        if count * min_bytes_each > self.remaining:
            raise DecodeError(
                f"declared {count} {what} at byte {self.pos}, "
                f"but only {self.remaining} bytes remain"
            )
        return count

    def read_bytes(self, length: int) -> bytes:
        if length > self.remaining:
            raise DecodeError(
                f"declared {length} bytes at byte {self.pos}, only {self.remaining} remain"
            )
        start = self.pos
        self.pos += length
        return self.data[start : self.pos]

    def read_var_bytes(self) -> bytes:
        return self.read_bytes(self.read_var_uint())

    def read_var_string(self) -> str:
        raw = self.read_var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 in string ending at byte {self.pos}") from exc

    def read_any(self, depth: int = 0) -> Any:
        if depth > _MAX_ANY_DEPTH:
            raise DecodeError("value nested too deeply")
        tag = self.read_uint8()
        if tag in (127, 126):  # undefined, null
            return None
        if tag == 125:
            return self.read_var_int()
        if tag == 124:
            return struct.unpack(">f", self.read_bytes(4))[0]
        if tag == 123:
            return struct.unpack(">d", self.read_bytes(8))[0]
        if tag == 122:
            return struct.unpack(">q", self.read_bytes(8))[0]
        if tag == 121:
            return False
        if tag == 120:
            return True
        if tag == 119:
            return self.read_var_string()
        if tag == 118:
            count = self.read_length("object entries", 2)
            return {self.read_var_string(): self.read_any(depth + 1) for _ in range(count)}
        if tag == 117:
            count = self.read_length("array elements")
            return [self.read_any(depth + 1) for _ in range(count)]
        if tag == 116:
            return self.read_var_bytes()
        raise DecodeError(f"unknown value tag {tag} at byte {self.pos - 1}")


class Encoder:
    """Writes lib0 values; ``to_bytes()`` returns what was written."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def write_uint8(self, value: int) -> None:
        self._buf.append(value & 0xFF)

    def write_var_uint(self, value: int) -> None:
        if value < 0:
            raise ValueError("var uint must not be negative")
        while value > 0x7F:
            self._buf.append(0x80 | (value & 0x7F))
            value >>= 7
        self._buf.append(value)

    def write_bytes(self, data: bytes) -> None:
        self._buf += data

    def write_var_bytes(self, data: bytes) -> None:
        self.write_var_uint(len(data))
        self._buf += data

    def write_var_string(self, text: str) -> None:
        self.write_var_bytes(text.encode("utf-8"))

    def to_bytes(self) -> bytes:
        return bytes(self._buf)
