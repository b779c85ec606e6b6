"""Errors raised by the document engine.

Every error the engine raises on purpose derives from :class:`CrdtError`::

    CrdtError
    ├── InvalidUpdate            the bytes are not a well-formed Yjs v1 update
    ├── InvalidOperation         a JSON operation cannot apply (bad shape, path, type, index)
    ├── InvalidDocumentId        an id outside ``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``
    ├── LimitExceeded            a configured limit (document size, operations, ...) was passed
    ├── DocumentNotFound         no such document (never written, or deleted)
    │   └── DocumentDeleted      it existed and its tombstone is the latest word
    └── StorageError             the DuckDB file could not be read or written
        ├── StorageFormatError   the file was written by a newer, unknown storage format
        └── StorageLocked        another process holds the data directory

Library errors (pycrdt, DuckDB) are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "CrdtError",
    "DocumentDeleted",
    "DocumentNotFound",
    "InvalidDocumentId",
    "InvalidOperation",
    "InvalidUpdate",
    "LimitExceeded",
    "StorageError",
    "StorageFormatError",
    "StorageLocked",
]


class CrdtError(Exception):
    """Root of the engine's errors. ``code`` is a stable snake_case name for APIs."""

    code = "crdt_error"


class InvalidUpdate(CrdtError):
    """The bytes are not a valid Yjs v1 update (truncated, random, hostile or rejected by Yrs)."""

    code = "invalid_update"


class InvalidOperation(CrdtError):
    """A JSON operation is malformed or does not fit the document (wrong type, bad index)."""

    code = "invalid_operation"

    def __init__(self, message: str, *, index: int | None = None) -> None:
        if index is not None:
            message = f"operation {index}: {message}"
        super().__init__(message)
        #: Position of the failing operation in the request, when there is one.
        self.index = index


class InvalidDocumentId(CrdtError):
    code = "invalid_document_id"


class LimitExceeded(CrdtError):
    """A configured limit was passed; ``limit`` names the setting."""

    code = "limit_exceeded"

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class DocumentNotFound(CrdtError):
    code = "document_not_found"


class DocumentDeleted(DocumentNotFound):
    code = "document_deleted"


class StorageError(CrdtError):
    code = "storage_error"


class StorageFormatError(StorageError):
    code = "storage_format_unsupported"


class StorageLocked(StorageError):
    code = "data_directory_in_use"
