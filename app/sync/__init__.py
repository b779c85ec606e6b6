"""Live clients: the y-websocket protocol (``WS /v1/sync/{id}``), JSON event streams
(``WS /v1/docs/{id}/events``), awareness, and the fan-out of changes to them.

The public face::

    hub = Hub(store, node="eu-west-1", region="eu-west")     # one per node, in the lifespan
    await serve_sync(websocket, node, doc_id, can_write=True, subprotocol=None)
    await serve_events(websocket, node, doc_id, since=None, subprotocol=None)
    await hub.aclose()
"""

from .endpoints import serve_events, serve_sync
from .hub import Hub, Subscriber

__all__ = ["Hub", "Subscriber", "serve_events", "serve_sync"]
