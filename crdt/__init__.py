"""Meridian's document engine: CRDT documents (Yjs, through pycrdt) persisted to DuckDB.

No networking here; :mod:`app` builds the node on top. The public face::

    async with open_store(Path("data")) as store:
        result = await store.apply_update("notes", update)      # durable once it returns
        document = await store.get("notes")
        document.to_json(), document.state_vector(), document.encode_state(since)
        store.catalog.get("notes")                               # placement records, in memory
        await store.forget("notes", covered_by=holder_state_vector)  # drop this node's copy
"""

from .catalog import MAX_RECORD_BYTES, Catalog, CatalogRecord
from .document import Document, render
from .errors import (
    CrdtError,
    DocumentDeleted,
    DocumentNotFound,
    InvalidDocumentId,
    InvalidOperation,
    InvalidUpdate,
    LimitExceeded,
    StorageError,
    StorageFormatError,
    StorageLocked,
)
from .ops import apply_operations, parse_operations
from .statevector import EMPTY_STATE_VECTOR, covers, decode_state_vector, encode_state_vector
from .storage import FORMAT_VERSION, ChangeRecord, SaveCheckpoint, Storage
from .store import (
    DOCUMENT_ID,
    Change,
    DocumentState,
    DocumentStore,
    StoreLimits,
    StoreStatistics,
    WriteResult,
    check_document_id,
    open_store,
)
from .yupdate import RootKind, parse_update

__all__ = [
    # store
    "DOCUMENT_ID",
    "Change",
    "DocumentState",
    "DocumentStore",
    "StoreLimits",
    "StoreStatistics",
    "WriteResult",
    "check_document_id",
    "open_store",
    # catalog
    "MAX_RECORD_BYTES",
    "Catalog",
    "CatalogRecord",
    # documents
    "Document",
    "RootKind",
    "apply_operations",
    "parse_operations",
    "parse_update",
    "render",
    # state vectors
    "EMPTY_STATE_VECTOR",
    "covers",
    "decode_state_vector",
    "encode_state_vector",
    # storage
    "FORMAT_VERSION",
    "ChangeRecord",
    "SaveCheckpoint",
    "Storage",
    # errors
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
