"""How deep shared types nest in a document, across every update it accepted.

Yrs frees nested types recursively, and the JSON view and the canonical form walk them; a
document nested many thousand levels deep overflows a stack (a SIGSEGV in Yrs) even when each
update that built it was shallow. So the depth a document can reach is bounded across updates:
a :class:`NestingIndex` remembers the depth of every item below a root (as id ranges, merged),
and :func:`resolve_depths` gives each item of a new update its depth from its parent or
origin, whether that is in the update itself or already in the document.

An item's depth is the number of shared types around it: an item whose parent is a root has
depth 0; an item whose parent is a type item at depth ``d`` has depth ``d + 1``; an item that
names no parent (it has an origin) sits beside its origin, at the origin's depth.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .lib0 import DecodeError

__all__ = [
    "MAX_NESTING",
    "NestingIndex",
    "NestingTooDeep",
    "Placed",
    "resolve_depths",
]

#: Deepest nesting of shared types a document may reach (and one update may hold).
MAX_NESTING = 256

Id = tuple[int, int]


class NestingTooDeep(DecodeError):
    """An update would nest shared types deeper than the limit."""


@dataclass(slots=True)
class Placed:
    """Where one item of an update hangs: under a root, under a type, or beside an origin."""

    client: int
    clock: int
    length: int
    #: The type item it is a child of (its parent was named by id).
    parent: Id | None
    #: The item it was inserted next to (when it names no parent).
    link: Id | None
    #: Its parent is a root (named by key).
    root: bool


class NestingIndex:
    """Depth by id range for the items of one document below its roots (depth > 0 only;
    an id it does not hold is at a root, or unknown to the document)."""

    __slots__ = ("_depths", "_ends", "_starts", "deepest")

    def __init__(self) -> None:
        # Per client, sorted span starts and, at the same positions, span ends and depths.
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        self._depths: dict[int, list[int]] = {}
        #: The deepest depth recorded.
        self.deepest = 0

    def depth_at(self, ident: Id) -> int | None:
        client, clock = ident
        starts = self._starts.get(client)
        if not starts:
            return None
        index = bisect.bisect_right(starts, clock) - 1
        if index < 0 or clock >= self._ends[client][index]:
            return None
        return self._depths[client][index]

    def add(self, client: int, clock: int, length: int, depth: int) -> None:
        """Records items ``clock .. clock + length - 1`` of ``client`` at ``depth``."""
        if depth <= 0:
            return
        end = clock + max(length, 1)
        starts = self._starts.setdefault(client, [])
        ends = self._ends.setdefault(client, [])
        depths = self._depths.setdefault(client, [])
        index = bisect.bisect_right(starts, clock)
        if index and ends[index - 1] >= end:
            return  # already known (a duplicate of integrated items)
        if (
            index
            and ends[index - 1] == clock
            and depths[index - 1] == depth
            and (index == len(starts) or starts[index] >= end)
        ):
            ends[index - 1] = end  # the common case: the next items typed at one place
        else:
            starts.insert(index, clock)
            ends.insert(index, end)
            depths.insert(index, depth)
        self.deepest = max(self.deepest, depth)

    def spans(self) -> int:
        return sum(len(starts) for starts in self._starts.values())


def resolve_depths(
    items: list[Placed],
    *,
    known: NestingIndex | None = None,
    limit: int | None = MAX_NESTING,
) -> list[tuple[Placed, int]]:
    """Each item below a root with its depth; raises :class:`NestingTooDeep` past ``limit``.

    ``known`` is the document's index. An id found neither there nor in the update counts as
    a root's item (depth 0): it is one, or it is a dependency that has not arrived. Yjs must
    accept updates out of order, so an update hanging off a missing item is measured as if
    that item were at a root; once the item arrives the document measures itself again
    (:meth:`crdt.document.Document.apply_update`), and from then on refuses any update that
    nests deeper than ``limit``. Out-of-order updates can thus take a document past the
    limit by at most what the updates waiting for dependencies hold (``max_pending_bytes``).
    """
    unknown = 0
    # Items of this update by client, in clock order (each client is one run of the update).
    starts: dict[int, list[int]] = {}
    positions: dict[int, list[int]] = {}
    for position, item in enumerate(items):
        starts.setdefault(item.client, []).append(item.clock)
        positions.setdefault(item.client, []).append(position)

    def in_update(ident: Id) -> int | None:
        client, clock = ident
        found = starts.get(client)
        if not found:
            return None
        index = bisect.bisect_right(found, clock) - 1
        if index < 0:
            return None
        position = positions[client][index]
        item = items[position]
        return position if clock < item.clock + max(item.length, 1) else None

    depths: dict[int, int] = {}
    for first in range(len(items)):
        if first in depths:
            continue
        stack = [first]
        on_stack = {first}
        while stack:
            position = stack[-1]
            item = items[position]
            target = item.parent or item.link
            if item.root or target is None:
                depths[position] = 0
            else:
                base = known.depth_at(target) if known is not None else None
                if base is None:
                    found = in_update(target)
                    if found is not None and found not in depths:
                        if found in on_stack:  # a cycle of origins: only hostile input has one
                            base = unknown
                        else:
                            stack.append(found)
                            on_stack.add(found)
                            continue
                    elif found is not None:
                        base = depths[found]
                    else:
                        base = unknown
                depth = base + (1 if item.parent is not None else 0)
                if limit is not None and depth > limit:
                    raise NestingTooDeep(f"shared types nested deeper than {limit} levels")
                depths[position] = depth
            stack.pop()
            on_stack.discard(position)
    return [(items[position], depth) for position, depth in depths.items() if depth > 0]
