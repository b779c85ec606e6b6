"""One CRDT document in memory: a pycrdt ``Doc`` plus what the engine knows about it.

A :class:`Document` validates every update before Yrs sees it, knows which of its updates are
still waiting for missing dependencies, infers its roots' types for the JSON view, and
produces state vectors and diffs. It does no I/O; :mod:`crdt.store` persists it.

Updates whose dependencies have not arrived are kept by Yrs as "pending" and integrate when the
missing part comes. Meanwhile the state vector reports only integrated changes (the pending
ones are invisible in it and in the JSON view), while the whole-state encoding returned by
:meth:`Document.encode_state` still carries them, so a copy made from it loses nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pycrdt

from .errors import InvalidUpdate, LimitExceeded
from .lib0 import DecodeError
from .nesting import NestingIndex, NestingTooDeep
from .statevector import covers, decode_state_vector, encode_state_vector
from .yupdate import _EVIDENCE_TEXT as TEXT_EVIDENCE
from .yupdate import (
    RootKind,
    canonical_delete_set,
    canonical_update,
    classify,
    infer_root_kinds,
    parse_update,
)

__all__ = ["ROOT_TYPES", "Document", "fold_updates", "render", "xml_string"]

log = logging.getLogger("meridian.document")

#: The pycrdt class for each root kind.
ROOT_TYPES: dict[RootKind, type[Any]] = {
    RootKind.MAP: pycrdt.Map,
    RootKind.ARRAY: pycrdt.Array,
    RootKind.TEXT: pycrdt.Text,
    RootKind.XML: pycrdt.XmlFragment,
}

_SAFE_INTEGER = 2**53


def _call_yrs(what: str, func: Any, *args: Any) -> Any:
    """Calls into Yrs, turning its assorted exceptions (and Rust panics, which surface as
    ``BaseException``) into :class:`InvalidUpdate`."""
    try:
        return func(*args)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise InvalidUpdate(f"{what}: {exc.__class__.__name__}: {exc}") from exc


def validate_update(data: bytes, known: NestingIndex | None = None) -> Any:
    """Structural check of a Yjs v1 update; returns the :class:`~crdt.yupdate.ParsedUpdate`.
    With a document's ``known`` depths, refuses nesting past the limit across updates
    (:class:`LimitExceeded`, ``max_nesting``)."""
    if not data:
        raise InvalidUpdate("empty body: a Yjs update has at least two bytes")
    try:
        return parse_update(data, known=known)
    except NestingTooDeep as exc:
        raise LimitExceeded(
            f"{exc}: the document may not nest maps, arrays or texts deeper than that",
            limit="max_nesting",
        ) from None
    except DecodeError as exc:
        raise InvalidUpdate(f"not a valid Yjs v1 update: {exc}") from exc


def render(value: Any) -> Any:
    """The JSON form of a value read from a document, as Yjs's ``toJSON`` would show it.

    Maps become objects, arrays lists, text and XML strings; numbers that are whole are shown
    without a fraction (JavaScript has one number type); binary content is base64.
    """
    if isinstance(value, pycrdt.Map):
        return {key: render(item) for key, item in value.items()}
    if isinstance(value, pycrdt.Array):
        return [render(item) for item in value]
    if isinstance(value, pycrdt.XmlFragment | pycrdt.XmlElement | pycrdt.XmlText):
        return xml_string(value)
    if isinstance(value, pycrdt.Text):
        return str(value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= _SAFE_INTEGER:
            return int(value)
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(key): render(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, pycrdt.Doc):
        return {"subdocument": value.guid}
    return str(value)


def xml_string(node: Any) -> str:
    """XML as Yjs' ``toString`` writes it, so every copy shows the same string: lower-case tag
    names, attributes sorted by name (Yrs keeps them in hash order), formatted text wrapped in
    one element per attribute, sorted too. Values are not escaped, as in Yjs."""
    if isinstance(node, pycrdt.XmlText):
        parts = []
        for chunk, attributes in node.diff():
            nested = sorted((attributes or {}).items())
            opening = "".join(
                f"<{name}" + "".join(f' {k}="{v}"' for k, v in sorted(_attrs(value))) + ">"
                for name, value in nested
            )
            closing = "".join(f"</{name}>" for name, _ in reversed(nested))
            parts.append(f"{opening}{chunk if isinstance(chunk, str) else render(chunk)}{closing}")
        return "".join(parts)
    children = "".join(xml_string(child) for child in node.children)
    if isinstance(node, pycrdt.XmlElement):
        tag = (node.tag or "").lower()
        pairs: list[tuple[str, Any]] = list(node.attributes)  # type: ignore[call-overload]
        attribute_text = "".join(f' {key}="{value}"' for key, value in sorted(pairs))
        return f"<{tag}{attribute_text}>{children}</{tag}>"
    return children


def _attrs(value: Any) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def _infer(doc_id: str, state: bytes, nesting: NestingIndex | None = None) -> dict[str, set[str]]:
    try:
        return infer_root_kinds(state, nesting)
    except DecodeError as exc:  # Yrs' own encoding: should not happen, must not break reads
        log.warning("document %s: cannot infer root types: %s", doc_id, exc)
        return {}


def _observer(ref: weakref.ReferenceType[Document]) -> Callable[[Any], None]:
    """The transaction observer of ``ref``'s Doc, holding the Document weakly."""

    def observe(event: Any) -> None:
        document = ref()
        if document is not None:
            document._on_transaction(event)

    return observe


class Document:
    """A document's live state. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(
        self,
        doc_id: str,
        *,
        incarnation: int = 0,
        client_id: int | None = None,
        max_pending_bytes: int = 64 * 1024,
    ) -> None:
        self.id = doc_id
        #: Which life of this id the content belongs to; a delete ends one, a write after it
        #: starts the next (see docs/design.md, "Deletion").
        self.incarnation = incarnation
        self._doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        # Root name -> evidence about its type, merged from every update applied.
        self._evidence: dict[str, set[str]] = {}
        # The state vector at the last full inference of root types (see root_kinds).
        self._inferred_at: bytes | None = None
        # The state vector when array roots were last looked at for text (see root_kinds).
        self._probed_at: bytes | None = None
        # Roots already cast in ``_doc``: the kind each was cast to and the pycrdt object of
        # that kind. Kept here because ``_doc[name]`` is always of a root's first cast (Yrs
        # keeps a branch's first type), whatever a later cast asked for.
        self._cast: dict[str, tuple[RootKind, Any]] = {}
        # Updates that held parts Yrs could not integrate yet (missing dependencies).
        self._pending: list[tuple[bytes, dict[int, int]]] = []
        #: Bytes of the updates in ``_pending``, and how many may wait at most.
        self.pending_bytes = 0
        self.max_pending_bytes = max_pending_bytes
        # The integrated delta of the last apply, captured from Yrs' transaction event.
        self._last_delta: bytes | None = None
        # The state vector, decoded and encoded, until the next transaction changes it.
        self._clocks: dict[int, int] | None = None
        self._vector: bytes | None = None
        # Yrs keeps the observer alive as long as the Doc; a bound method would hold this
        # Document too, a cycle through Rust that Python's collector cannot see: no Document
        # would ever be freed (found by fuzzing). The observer holds a weak reference. And
        # pycrdt's own wrapper of the observer holds the pycrdt Doc, the same cycle one level
        # down: the subscription is dropped when this Document goes.
        subscription = self._doc.observe(_observer(weakref.ref(self)))
        weakref.finalize(self, self._doc.unobserve, subscription)
        #: Bytes this document takes in storage (snapshot plus log), kept by the store.
        self.stored_bytes = 0
        #: Writes applied here but not yet committed; a document with any is never evicted.
        self.uncommitted = 0
        # Depth of the items below the roots, to bound nesting across updates.
        self._nesting = NestingIndex()
        #: Set when Yrs failed half-way through an update: the in-memory state is suspect and
        #: the store must reload the document from disk.
        self.poisoned = False

    def _on_transaction(self, event: Any) -> None:
        self._last_delta = event.update
        self._clocks = self._vector = None

    # -- reading -------------------------------------------------------------------------

    def state_vector(self) -> bytes:
        """The encoded state vector of the integrated changes, clients in ascending order (Yrs
        writes them in hash order), so equal states have equal bytes on every copy."""
        if self._vector is None:
            self._vector = encode_state_vector(self._current_clocks())
        return self._vector

    def clocks(self) -> dict[int, int]:
        """The state vector as client -> clock (a copy the caller may change)."""
        return dict(self._current_clocks())

    def _current_clocks(self) -> dict[int, int]:
        # Every change goes through a transaction, whose observer drops the cached vector.
        if self._clocks is None:
            self._clocks = decode_state_vector(bytes(self._doc.get_state()))
        return self._clocks

    def encode_state(self, since: bytes | None = None) -> bytes:
        """Everything this copy holds, or only what a copy at state vector ``since`` lacks,
        as one Yjs v1 update. Pending (not yet integrable) parts are included."""
        if since is not None:
            try:
                decode_state_vector(since)
            except DecodeError as exc:
                raise InvalidUpdate(f"invalid state vector: {exc}") from exc
        state = bytes(self._doc.get_update())
        if self._pending:
            state = pycrdt.merge_updates(state, *(update for update, _ in self._pending))
        if since is None:
            return state
        return bytes(_call_yrs("diff", pycrdt.get_update, state, since))

    def canonical_state(self) -> bytes:
        """The whole state in a form that is byte-identical on two copies holding the same
        content, whatever order their updates came in.

        Yrs' own encoding depends on history in two ways: adjacent items of one client are
        merged or not depending on arrival order, and ``any`` objects list their keys in hash
        order. Integrating the state into a fresh document in one transaction merges every
        mergeable item; :func:`~crdt.yupdate.canonical_update` then sorts object keys.
        """
        try:
            fresh: pycrdt.Doc[Any] = pycrdt.Doc()
            fresh.apply_update(self._doc.get_update())
            state = bytes(fresh.get_update())
            if self._pending:
                state = pycrdt.merge_updates(state, *sorted(update for update, _ in self._pending))
            return canonical_update(state)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # a Yrs panic surfaces as a BaseException
            # Content Yrs cannot integrate again, or that the canonical form cannot read:
            # the state as this copy encodes it, so that every route still answers for the
            # document (two such copies compare equal only if their encodings are).
            log.warning("document %s: no canonical state, its own encoding used: %r", self.id, exc)
            return bytes(self._doc.get_update())

    def digest(self) -> str:
        """SHA-256 of :meth:`canonical_state`: equal on two copies exactly when they hold the
        same content. This is what proves convergence across nodes."""
        return hashlib.sha256(self.canonical_state()).hexdigest()

    def summary(self) -> bytes:
        """16 bytes that are equal on two copies holding the same integrated changes: a hash
        of the state vector and the (canonical) delete set. Much cheaper than
        :meth:`digest`; anti-entropy compares summaries to skip copies that agree."""
        clocks = self.clocks()
        deletions = canonical_delete_set(bytes(self._doc.get_update(self._doc.get_state())))
        if deletions is None:  # unexpected structs: fall back to the full canonical state
            deletions = self.canonical_state()
        digest = hashlib.blake2b(digest_size=16)
        digest.update(encode_state_vector(clocks))
        digest.update(deletions)
        return digest.digest()

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def reach_vector(self) -> bytes:
        """A state vector covering every change this copy holds, the ones still waiting for
        their dependencies included (``state_vector`` leaves those out): what a holder must
        have for this copy to be dropped (see :meth:`covered_by`)."""
        clocks = self.clocks()
        for _, reach in self._pending:
            for client, end in reach.items():
                clocks[client] = max(clocks.get(client, 0), end)
        return encode_state_vector(clocks)

    def covered_by(self, clocks: dict[int, int]) -> bool:
        """True when a copy at state vector ``clocks`` has every change this copy holds, the
        ones still waiting for their dependencies included. A state vector says nothing of
        deletions (they take no clock): a copy whose deletions the other lacks is covered."""
        return covers(clocks, self.clocks()) and all(
            covers(clocks, reach) for _, reach in self._pending
        )

    def root_kinds(self) -> dict[str, RootKind | None]:
        """Each root's inferred type; None for a root whose content says nothing of it."""
        names = list(self._doc.keys())
        unknown = any(classify(self._evidence.get(name, set())) is None for name in names)
        if unknown and self._inferred_at != (state := self.state_vector()):
            # A root whose explicit items say nothing (the first one inserted was deleted and
            # its content garbage-collected): follow the origins of the others, once per state.
            self._inferred_at = state
            self._absorb(_infer(self.id, bytes(self._doc.get_update())))
        kinds = {name: classify(self._evidence.get(name, set())) for name in names}
        arrays = [name for name, kind in kinds.items() if kind is RootKind.ARRAY]
        if arrays and self._probed_at != (state := self.state_vector()):
            self._probed_at = state
            for name in arrays:
                if self._holds_text(name):
                    self._evidence.setdefault(name, set()).add(TEXT_EVIDENCE)
                    kinds[name] = RootKind.TEXT
        return kinds

    def _holds_text(self, name: str) -> bool:
        """Whether array root ``name`` holds text. Characters typed after an array's items
        name no root (their origin places them), so the update that brings them brings no
        evidence of text; a copy loaded from storage follows origins and sees it (``load``).
        Read through an array, text with a character of several UTF-8 bytes hangs Yrs for
        ever (found by the live fuzzer, docs/fuzzing.md): look at the root as text first."""
        self.root(name, RootKind.ARRAY)  # cast as an array first, as a copy reading it would be
        return str(self._doc.get(name, type=pycrdt.Text)) != ""

    def root(self, name: str, kind: RootKind) -> Any:
        """The root ``name`` as the pycrdt type for ``kind`` (cast on first use, and again when
        its inferred kind changes: a root first read as an array may turn out to be text)."""
        cast = self._cast.get(name)
        if cast is None or cast[0] is not kind:
            # Not _doc[name]: read as its first cast's type, a root written since as text
            # showed its characters as array elements, or (a character of several bytes)
            # hung Yrs for ever (found by the live fuzzer, docs/fuzzing.md).
            cast = (kind, self._doc.get(name, type=ROOT_TYPES[kind]))
            self._cast[name] = cast
        return cast[1]

    def to_json(self) -> dict[str, Any]:
        """The JSON view: ``{root name: value}`` for every root that has a known type."""
        content: dict[str, Any] = {}
        for name, kind in sorted(self.root_kinds().items()):
            try:
                content[name] = None if kind is None else render(self.root(name, kind))
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # a Yrs panic surfaces as a BaseException
                # Content no real client makes (a format mark with a map key, nesting past
                # Python's recursion limit): show the root as null rather than fail the view.
                log.warning("document %s: root %r cannot be rendered: %r", self.id, name, exc)
                content[name] = None
        return content

    # -- writing -------------------------------------------------------------------------

    def apply_update(self, data: bytes) -> bool:
        """Validates and applies a Yjs v1 update; returns True when it must be stored.

        It must be stored when it changed the integrated state or left parts pending. A
        duplicate of something already integrated returns False. Raises
        :class:`InvalidUpdate` and leaves the document unchanged when the bytes are invalid;
        if Yrs fails half-way (a panic), the document is marked ``poisoned``.
        """
        parsed = validate_update(data, self._nesting)
        if parsed.is_empty:
            return False
        if any(update == data for update, _ in self._pending):
            return False  # already stored and waiting for the same dependencies
        before = self.clocks()
        if self.pending_bytes + len(data) > self.max_pending_bytes and any(
            before.get(client, 0) < start for client, start in parsed.starts.items()
        ):
            # Yrs' cost of merging pending updates grows faster than their size: bound it.
            raise LimitExceeded(
                f"this update depends on changes this copy does not have, and "
                f"{self.pending_bytes} bytes already wait for missing changes (limit "
                f"{self.max_pending_bytes}); send the missing changes first",
                limit="max_pending_bytes",
            )
        self._last_delta = None
        try:
            self._doc.apply_update(data)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            # Yrs decodes the whole update before it integrates; a decoding refusal (a
            # ValueError) changed nothing. A panic may come half-way through integration: the
            # in-memory state can no longer be trusted and the store reloads it from disk.
            if not isinstance(exc, ValueError):
                self.poisoned = True
            raise InvalidUpdate(f"Yjs refused the update: {exc.__class__.__name__}: {exc}") from exc
        self._absorb(parsed.root_evidence)
        for item, depth in parsed.nested:
            self._nesting.add(item.client, item.clock, item.length, depth)
        after = self.clocks()
        pending = any(after.get(client, 0) < end for client, end in parsed.reach.items())
        if pending:
            self._pending.append((data, parsed.reach))
            self.pending_bytes += len(data)
        if self._pending and after != before:
            waiting = len(self._pending)
            self._retry_pending(after)
            if len(self._pending) < waiting:
                # Items that waited were measured against content nobody had: measure again.
                self._remeasure()
        return pending or self._last_delta is not None

    def _remeasure(self) -> None:
        self._nesting = NestingIndex()
        self._absorb(_infer(self.id, bytes(self._doc.get_update()), self._nesting))

    def _retry_pending(self, clocks: dict[int, int]) -> None:
        """Re-applies updates still waiting for dependencies, until none makes progress.

        Yrs integrates its pending structs when the missing part arrives, but not always: with
        several pending updates from one client (a later one arrived before an earlier one),
        some stay pending although nothing is missing any more. Applying them again integrates
        them (Yrs ignores what it already has).
        """
        progressed = True
        while progressed and self._pending:
            progressed = False
            waiting = []
            for update, reach in self._pending:
                if all(clocks.get(client, 0) >= end for client, end in reach.items()):
                    continue
                try:
                    self._doc.apply_update(update)
                except (KeyboardInterrupt, SystemExit, GeneratorExit):
                    raise
                except BaseException:
                    log.warning("re-applying a pending update of %s failed", self.id)
                now = self.clocks()
                if now != clocks:
                    clocks = now
                    progressed = True
                waiting.append((update, reach))
            self._pending = [
                (update, reach)
                for update, reach in waiting
                if any(clocks.get(client, 0) < end for client, end in reach.items())
            ]
            self.pending_bytes = sum(len(update) for update, _ in self._pending)

    def load(self, updates: list[bytes]) -> None:
        """Builds the state from stored updates (snapshot first). They were validated when
        written; a failure here means a damaged store and is raised as InvalidUpdate."""
        for data in updates:
            _call_yrs("stored update", self._doc.apply_update, data)
        after = self.clocks()
        for data in updates:
            # pycrdt.get_state says nothing of an update that does not start at clock 0
            reach = parse_update(data).reach
            if any(after.get(client, 0) < end for client, end in reach.items()):
                self._pending.append((data, reach))
                self.pending_bytes += len(data)
        if self._pending:
            self._retry_pending(after)
        if updates:
            self._remeasure()

    def _absorb(self, evidence: dict[str, set[str]]) -> None:
        for name, found in evidence.items():
            self._evidence.setdefault(name, set()).update(found)

    def transact(self, client_id: int) -> pycrdt.Doc[Any]:
        """A scratch copy of this document for local edits by ``client_id``; see
        :mod:`crdt.ops`. Its roots are cast like this document's."""
        scratch: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        scratch.apply_update(self._doc.get_update())
        return scratch


def fold_updates(parts: Sequence[bytes]) -> bytes:
    """One update equivalent to ``parts``: the integrated state (with deleted content
    garbage-collected) plus whatever could not integrate yet (missing dependencies), which
    Yrs leaves out of its state encoding and which must not be lost."""
    # Applied one by one, as they were when written: Yrs refuses some merged logs whose
    # parts it accepted separately.
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for part in parts:
        _call_yrs("fold", doc.apply_update, part)
    state = bytes(doc.get_update())
    clocks = doc.get_state()
    residuals = [bytes(pycrdt.get_update(part, clocks)) for part in parts]
    residuals = [r for r in residuals if not parse_update(r).is_empty]
    if residuals:
        state = bytes(pycrdt.merge_updates(state, *residuals))
    return state
