"""Mutations: bytes (bit flips, truncation, huge lengths, splices), JSON (structure and
serialisation), strings (multi-byte, invalid UTF-8, very long), all drawn from one seeded
``random.Random`` so that a run is the same for the same seed."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["Mutator"]

T = TypeVar("T")

#: lib0 var uints that decode to lengths and clocks no input can back.
HUGE_VARINTS = (
    b"\xff\xff\xff\xff\x0f",  # 2**32 - 1
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",  # 2**56 - 1
    b"\xff" * 9 + b"\x01",  # 2**64 - 1 (ten bytes)
    b"\xff" * 12,  # never ends
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # eleven bytes, overflows 64 bits
)

#: Strings that break naive code: multi-byte, combining, right-to-left, zero-width, NUL,
#: controls, lone surrogates (written with ``surrogatepass`` where bytes are needed).
ODD_TEXT = (
    "",
    " ",
    "é",
    "e\u0301",
    "😀",
    "👩\u200d👩\u200d👧",
    "a😀b",
    "\u202eevil",
    "\ufeff",
    "\x00",
    "\r\n",
    "\t",
    "\ud800",
    "\udfff",
    "\U0010ffff",
    "null",
    "../",
    "%00",
    "%",
    "{",
    '"',
    "\\",
)


class Mutator:
    """Random choices and mutations from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- choices -------------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def integer(self) -> int:
        """A number from the places numbers break: zero, one, negatives, powers of two and
        their neighbours up to 2**64, or a small random one."""
        if self.chance(0.5):
            return self.rng.randrange(0, 100)
        base = self.pick((0, 1, 2**7, 2**8, 2**15, 2**16, 2**31, 2**32, 2**53, 2**63, 2**64))
        return (base + self.pick((-1, 0, 1))) * self.pick((1, 1, 1, -1))

    # -- strings -------------------------------------------------------------------------

    def text(self, size: int = 12) -> str:
        """A short string: letters, odd characters, or a very long run now and then."""
        roll = self.rng.random()
        if roll < 0.4:
            return "".join(self.rng.choices(string.ascii_letters + string.digits, k=size))
        if roll < 0.8:
            return "".join(self.pick(ODD_TEXT) for _ in range(self.rng.randrange(1, 5)))
        if roll < 0.95:
            return "".join(chr(self.rng.randrange(0x20, 0x2FFFF)) for _ in range(size))
        return self.pick(("x", "😀", "é")) * self.pick((1000, 5000, 70000))

    def encode(self, text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass")

    # -- bytes ---------------------------------------------------------------------------

    def bytes_(self, data: bytes, others: Sequence[bytes] = ()) -> bytes:
        """``data`` with one to four mutations."""
        for _ in range(self.rng.randrange(1, 5)):
            data = self._mutate_once(data, others)
        return data

    def _mutate_once(self, data: bytes, others: Sequence[bytes]) -> bytes:
        rng = self.rng
        size = len(data)
        kind = rng.randrange(13)
        if size == 0 or kind == 0:
            return data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        at = rng.randrange(size)
        if kind == 1:  # flip a bit
            return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
        if kind == 2:  # replace a byte
            return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
        if kind == 3:  # an interesting byte
            byte = self.pick((0x00, 0x01, 0x7F, 0x80, 0xFF))
            return data[:at] + bytes([byte]) + data[at + 1 :]
        if kind == 4:  # truncate
            return data[:at]
        if kind == 5:  # drop a range
            end = min(size, at + rng.randrange(1, 16))
            return data[:at] + data[end:]
        if kind == 6:  # insert random bytes
            extra = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
            return data[:at] + extra + data[at:]
        if kind == 7:  # a huge var uint where a length or a clock is read
            end = min(size, at + rng.randrange(1, 5))
            return data[:at] + self.pick(HUGE_VARINTS) + data[end:]
        if kind == 8:  # duplicate a range
            end = min(size, at + rng.randrange(1, 32))
            return data[:end] + data[at:end] + data[end:]
        if kind == 9 and others:  # splice with another valid input
            other = self.pick(others)
            cut = rng.randrange(len(other) + 1)
            return data[:at] + other[cut:]
        if kind == 10:  # the whole input twice
            return data + data
        if kind == 11:  # swap two bytes
            other = rng.randrange(size)
            swapped = bytearray(data)
            swapped[at], swapped[other] = swapped[other], swapped[at]
            return bytes(swapped)
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))

    def random_bytes(self, size: int | None = None) -> bytes:
        count = self.rng.randrange(0, 200) if size is None else size
        return bytes(self.rng.randrange(256) for _ in range(count))

    # -- JSON ----------------------------------------------------------------------------

    def json_value(self, depth: int = 0) -> Any:
        """A JSON value: the usual, and the unusual (huge and negative numbers, floats at
        the limits, odd strings, deep nesting, long arrays)."""
        rng = self.rng
        roll = rng.randrange(12 if depth < 4 else 7)
        if roll == 10 and rng.random() < 0.7:
            roll = 4  # deep nesting: now and then, not one value in twelve
        if roll == 0:
            return None
        if roll == 1:
            return rng.random() < 0.5
        if roll == 2:
            return self.integer()
        if roll == 3:
            return self.pick((0.5, -0.0, 1e308, -1e308, 5e-324, 3.14, 1e16))
        if roll in (4, 5, 6):
            return self.text()
        if roll in (7, 8):
            return [self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))]
        if roll == 9:
            return {self.text(4): self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))}
        if roll == 10:
            nested: Any = self.json_value(depth + 4)
            for _ in range(self.pick((10, 60, 200, 900))):
                nested = [nested] if self.chance(0.5) else {"k": nested}
            return nested
        # Long arrays, but not past a thousand elements: a PATCH inserting N array elements
        # costs the node O(N**2) time and memory (docs/fuzzing.md, live finding 2); the run
        # stays below the sizes that hold the node for seconds.
        return list(range(self.pick((10, 100, 1000))))

    def json_structure(self, value: Any) -> Any:
        """``value`` with one structural change somewhere: a value replaced, a key dropped or
        added, a list element added or dropped, a type changed."""
        rng = self.rng
        if isinstance(value, dict) and value and rng.random() < 0.7:
            key = self.pick(sorted(value, key=str))
            changed = dict(value)
            roll = rng.randrange(4)
            if roll == 0:
                del changed[key]
            elif roll == 1:
                changed[self.text(5)] = self.json_value()
            else:
                changed[key] = self.json_structure(value[key])
            return changed
        if isinstance(value, list) and value and rng.random() < 0.7:
            index = rng.randrange(len(value))
            changed_list = list(value)
            roll = rng.randrange(4)
            if roll == 0:
                del changed_list[index]
            elif roll == 1:
                changed_list.insert(index, self.json_value())
            else:
                changed_list[index] = self.json_structure(value[index])
            return changed_list
        if isinstance(value, str) and rng.random() < 0.5:
            return self.pick((value + self.text(3), value[: len(value) // 2], value.upper()))
        if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.7:
            return self.pick((value + 1, value - 1, -value, value * 2**40, str(value), 0.5))
        return self.json_value()

    def dumps(self, value: Any) -> bytes:
        """``value`` serialised, in one of several spellings (ASCII escapes or raw UTF-8,
        spaces, a byte-order mark, lone surrogates passed through)."""
        try:
            text = json.dumps(
                value,
                ensure_ascii=self.chance(0.5),
                indent=self.pick((None, None, 1)),
                allow_nan=self.chance(0.1),
            )
        except (ValueError, RecursionError):
            return b"[" * 3000
        raw = text.encode("utf-8", "surrogatepass")
        if self.chance(0.05):
            raw = b"\xef\xbb\xbf" + raw
        return raw
