"""JSON operations (PRODUCT.md, ``PATCH /v1/docs/{id}``) turned into one Yjs update.

All operations of a request apply to a scratch copy of the document inside one transaction; only
when every one succeeded is the resulting update taken (and then applied to the real document
like any other update). One invalid operation rejects the request and nothing changes.

Paths start with a root name, then map keys (strings) and array indexes (integers). Text
indexes and lengths count Unicode code points; pycrdt's ``Text`` counts UTF-8 bytes, so they
are converted here.
"""

from __future__ import annotations

import math
from typing import Any

import pycrdt

from .document import ROOT_TYPES, Document
from .errors import InvalidOperation, LimitExceeded
from .yupdate import RootKind

__all__ = ["OPERATIONS", "apply_operations", "parse_operations"]

_SAFE_INTEGER = 2**53
_MAX_VALUE_DEPTH = 64

#: Operation name -> (fields required besides "op" and "path", root kind it implies).
OPERATIONS: dict[str, tuple[tuple[str, ...], RootKind | None]] = {
    "set": (("value",), RootKind.MAP),
    "delete": ((), None),
    "insert_text": (("index", "text"), RootKind.TEXT),
    "delete_text": (("index", "length"), RootKind.TEXT),
    "insert": (("index", "values"), RootKind.ARRAY),
    "append": (("values",), RootKind.ARRAY),
    "remove": (("index", "length"), RootKind.ARRAY),
}

_KIND_NAMES = {
    pycrdt.Map: "map",
    pycrdt.Array: "array",
    pycrdt.Text: "text",
    pycrdt.XmlFragment: "XML",
    pycrdt.XmlElement: "XML",
    pycrdt.XmlText: "XML",
}


def _kind_name(value: Any) -> str:
    for cls, name in _KIND_NAMES.items():
        if isinstance(value, cls):
            return name
    return "value" if value is not None else "null"


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiouAEIOU" else f"a {noun}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_operations(body: Any, *, max_operations: int) -> list[dict[str, Any]]:
    """Checks the shape of a request body ``{"ops": [...]}``; returns the operations.

    Raises :class:`InvalidOperation` for a wrong shape, :class:`LimitExceeded` for too many.
    """
    if not isinstance(body, dict) or not isinstance(body.get("ops"), list):
        raise InvalidOperation('the body must be an object {"ops": [...]}')
    ops = body["ops"]
    if not ops:
        raise InvalidOperation('"ops" is empty: give at least one operation')
    if len(ops) > max_operations:
        raise LimitExceeded(
            f"{len(ops)} operations in one request; the limit is {max_operations}",
            limit="max_operations",
        )
    for index, op in enumerate(ops):
        _check_shape(op, index)
    return list(ops)


def _check_shape(op: Any, index: int) -> None:
    if not isinstance(op, dict):
        raise InvalidOperation("must be an object", index=index)
    name = op.get("op")
    # Only a string can name an operation: an object or a list is not even hashable.
    if not isinstance(name, str) or name not in OPERATIONS:
        known = ", ".join(OPERATIONS)
        shown = (
            "an object" if isinstance(name, dict) else "a list" if isinstance(name, list) else None
        )
        what = shown or repr(name)[:64]
        raise InvalidOperation(f"unknown op {what}; known: {known}", index=index)
    path = op.get("path")
    if not isinstance(path, list) or not path:
        raise InvalidOperation('"path" must be a non-empty list', index=index)
    if len(path) > _MAX_VALUE_DEPTH:
        raise InvalidOperation(f"paths are at most {_MAX_VALUE_DEPTH} elements", index=index)
    if not isinstance(path[0], str) or not path[0]:
        raise InvalidOperation("the first path element must name a root", index=index)
    for step in path[1:]:
        if not isinstance(step, str) and not _is_int(step):
            raise InvalidOperation("path elements must be strings or integers", index=index)
    required, _ = OPERATIONS[name]
    for key in required:
        if key not in op:
            raise InvalidOperation(f'{name} needs "{key}"', index=index)
    unknown = set(op) - {"op", "path", *required}
    if unknown:
        raise InvalidOperation(f"unknown field(s) {sorted(unknown)} for {name}", index=index)
    for key in ("index", "length"):
        if key in op and (not _is_int(op[key]) or op[key] < 0):
            raise InvalidOperation(f'"{key}" must be a non-negative integer', index=index)
    if "text" in op and not isinstance(op["text"], str):
        raise InvalidOperation('"text" must be a string', index=index)
    if "values" in op and not isinstance(op["values"], list):
        raise InvalidOperation('"values" must be a list', index=index)
    if name in ("set", "delete") and len(path) < 2:
        raise InvalidOperation(f"{name} needs a path below the root", index=index)


def _prelim(value: Any, depth: int = 0) -> Any:
    """A JSON value as pycrdt content: objects become maps, lists arrays."""
    if depth > _MAX_VALUE_DEPTH:
        raise InvalidOperation(f"value nested deeper than {_MAX_VALUE_DEPTH} levels")
    if isinstance(value, dict):
        return pycrdt.Map({str(k): _prelim(v, depth + 1) for k, v in value.items()})
    if isinstance(value, list):
        return pycrdt.Array([_prelim(v, depth + 1) for v in value])
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if _is_int(value):
        if abs(value) > _SAFE_INTEGER:
            raise InvalidOperation(
                f"integer {value} is outside ±2**53; JavaScript clients could not read it exactly"
            )
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidOperation("numbers must be finite")
        return value
    raise InvalidOperation(f"unsupported value of type {type(value).__name__}")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class _Applier:
    def __init__(self, document: Document, scratch: pycrdt.Doc[Any]) -> None:
        self.kinds = document.root_kinds()
        self.scratch = scratch
        self.cast: dict[str, RootKind] = {}

    def root(self, name: str, implied: RootKind | None, index: int) -> Any:
        """The root ``name``; a missing root (or one whose content says nothing of its type)
        is created as ``implied``; an existing one of another type is an error."""
        kind = self.cast.get(name) or self.kinds.get(name)
        if kind is None:
            if implied is None:
                raise InvalidOperation(f"no root named {name!r}", index=index)
            kind = implied
        elif implied is not None and kind is not implied:
            raise InvalidOperation(
                f"root {name!r} is {_article(kind.value)}, not {_article(implied.value)}",
                index=index,
            )
        if self.cast.get(name) is not kind:
            self.scratch.get(name, type=ROOT_TYPES[kind])
            self.cast[name] = kind
        return self.scratch[name]

    def container(self, path: list[Any], implied: RootKind | None, index: int) -> Any:
        """The value at ``path``, creating missing maps (and the missing last value as
        ``implied``) along the way."""
        root_kind: RootKind | None = implied
        if len(path) > 1:
            root_kind = RootKind.MAP if isinstance(path[1], str) else RootKind.ARRAY
        current = self.root(path[0], root_kind, index)
        for position, step in enumerate(path[1:], start=1):
            last = position == len(path) - 1
            if isinstance(current, pycrdt.Map):
                if not isinstance(step, str):
                    raise InvalidOperation(f"map key must be a string, got {step!r}", index=index)
                if step not in current:
                    if last and implied is None:
                        raise InvalidOperation(f"no value at {path[: position + 1]}", index=index)
                    new_kind = implied if last else RootKind.MAP
                    assert new_kind is not None
                    current[step] = ROOT_TYPES[new_kind]()
                current = current[step]
            elif isinstance(current, pycrdt.Array):
                if not _is_int(step) or not 0 <= step < len(current):
                    raise InvalidOperation(
                        f"index {step!r} out of range for array of {len(current)} at "
                        f"{path[:position]}",
                        index=index,
                    )
                current = current[step]
            else:
                raise InvalidOperation(
                    f"{path[:position]} is {_article(_kind_name(current))}, it has no children",
                    index=index,
                )
        return current

    def apply(self, op: dict[str, Any], index: int) -> None:
        name = op["op"]
        path = op["path"]
        if name in ("set", "delete"):
            key = path[-1]
            parent_kind = RootKind.MAP if isinstance(key, str) else RootKind.ARRAY
            parent = self.container(path[:-1], parent_kind if name == "set" else None, index)
            if isinstance(parent, pycrdt.Map):
                if not isinstance(key, str):
                    raise InvalidOperation(f"map key must be a string, got {key!r}", index=index)
                if name == "set":
                    parent[key] = _prelim_at(op["value"], index)
                elif key in parent:
                    del parent[key]
            elif isinstance(parent, pycrdt.Array):
                if not _is_int(key) or not 0 <= key < len(parent):
                    raise InvalidOperation(
                        f"index {key!r} out of range for array of {len(parent)}", index=index
                    )
                del parent[key]
                if name == "set":
                    parent.insert(key, _prelim_at(op["value"], index))
            else:
                raise InvalidOperation(
                    f"{path[:-1]} is {_article(_kind_name(parent))}, not a map or array",
                    index=index,
                )
            return
        _, implied = OPERATIONS[name]
        target = self.container(path, implied, index)
        if name in ("insert_text", "delete_text"):
            if not isinstance(target, pycrdt.Text):
                raise InvalidOperation(
                    f"{path} is {_article(_kind_name(target))}, not text", index=index
                )
            current = str(target)
            length = op.get("length", 0)
            if op["index"] + length > len(current):
                raise InvalidOperation(
                    f"range {op['index']}..{op['index'] + length} is outside the text of "
                    f"{len(current)} characters",
                    index=index,
                )
            start = _byte_offset(current, op["index"])
            if name == "insert_text":
                if op["text"]:
                    target.insert(start, op["text"])
            elif length:
                end = _byte_offset(current, op["index"] + length)
                del target[start:end]
            return
        if not isinstance(target, pycrdt.Array):
            raise InvalidOperation(
                f"{path} is {_article(_kind_name(target))}, not an array", index=index
            )
        size = len(target)
        if name == "append":
            for value in op["values"]:
                target.append(_prelim_at(value, index))
        elif name == "insert":
            if op["index"] > size:
                raise InvalidOperation(
                    f"index {op['index']} is past the end of the array of {size}", index=index
                )
            for offset, value in enumerate(op["values"]):
                target.insert(op["index"] + offset, _prelim_at(value, index))
        else:  # remove
            if op["index"] + op["length"] > size:
                raise InvalidOperation(
                    f"range {op['index']}..{op['index'] + op['length']} is outside the array "
                    f"of {size}",
                    index=index,
                )
            if op["length"]:
                del target[op["index"] : op["index"] + op["length"]]


def _prelim_at(value: Any, index: int) -> Any:
    try:
        return _prelim(value)
    except InvalidOperation as exc:
        raise InvalidOperation(str(exc), index=index) from exc


def apply_operations(document: Document, ops: list[dict[str, Any]], *, client_id: int) -> bytes:
    """Applies shape-checked operations to a scratch copy of ``document`` as ``client_id``;
    returns the Yjs update they make (possibly empty when they change nothing).

    The document itself is not modified: apply the returned update to it. Raises
    :class:`InvalidOperation` when any operation cannot apply.
    """
    scratch = document.transact(client_id)
    applier = _Applier(document, scratch)
    deltas: list[bytes] = []
    subscription = scratch.observe(lambda event: deltas.append(event.update))
    try:
        with scratch.transaction():
            for index, op in enumerate(ops):
                applier.apply(op, index)
    except InvalidOperation:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise InvalidOperation(f"could not apply: {exc.__class__.__name__}: {exc}") from exc
    finally:
        scratch.unobserve(subscription)
    if not deltas:
        return b"\x00\x00"
    return deltas[0] if len(deltas) == 1 else pycrdt.merge_updates(*deltas)
