"""The Python client SDK for a Meridian cluster (see :mod:`app.client.client`).

Importable without the server: it needs httpx, websockets and pycrdt, not FastAPI.
Its :class:`MeridianError` is an error *answer* from a node, seen by a client; the node's own
exception root is :class:`app.errors.MeridianError`.
"""

from .client import LiveDocument, MeridianClient, MeridianError, NoNodeAvailable, OutcomeUnknown

__all__ = ["LiveDocument", "MeridianClient", "MeridianError", "NoNodeAvailable", "OutcomeUnknown"]
