"""Meridian's node and the tools around it.

Packages, each with its own public face:

- :mod:`app.http` — ``create_app(settings)``: one node's ASGI app (FastAPI)
- :mod:`app.node` — the composition root: ``open_node(settings)`` builds and closes the parts
- :mod:`app.replication` — peer links, deltas, anti-entropy, durability waits
- :mod:`app.sync` — live clients: y-websocket and JSON event streams
- :mod:`app.cluster` — placement (sans-I/O)
- :mod:`app.client` — the Python client SDK (importable without the server)
- :mod:`app.tools` — operating tools: demo, WAN emulator, status, backup

Importing this package imports nothing heavy: ``import app.client`` does not pull in FastAPI.
"""

from .errors import ApiError, MeridianError
from .version import VERSION

__all__ = ["VERSION", "ApiError", "MeridianError"]
