"""A pure-Python reader of structure from fuzzer bytes (atheris' FuzzedDataProvider needs
atheris; the suite replays the corpus without it)."""

from __future__ import annotations

__all__ = ["Input"]


class Input:
    """Takes values from the front of ``data``; once it is used up, every read gives zeros
    and empty strings (so a short input is still a complete scenario)."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def __bool__(self) -> bool:
        return self._pos < len(self._data)

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        self._pos += 1
        return self._data[self._pos - 1]

    def choice(self, count: int) -> int:
        """An index below ``count`` (at most 256)."""
        return self.byte() % count

    def take(self, size: int) -> bytes:
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def chunk(self) -> bytes:
        """A length-prefixed byte string: two bytes of length (big-endian), then that many."""
        return self.take(self.byte() << 8 | self.byte())

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._pos)
