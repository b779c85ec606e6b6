"""The HTTP face of a node: routes by resource, the app factory, errors mapped to answers.

Public face::

    app = create_app(settings)        # an ASGI app; its lifespan opens and closes the node

Modules: :mod:`.documents` (documents and health), :mod:`.cluster` (``/v1/cluster`` and the
overview), :mod:`.streams` (the WebSocket routes: sync, events, peers), :mod:`.metrics`
(``/metrics`` and the request middleware), :mod:`.dashboard` (``/``), :mod:`.errors` (every
error to its answer), :mod:`.models` (response shapes for OpenAPI).
"""

from .app import create_app

__all__ = ["create_app"]
