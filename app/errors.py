"""Errors raised by the node on purpose.

Every one derives from :class:`MeridianError`::

    MeridianError
    ├── ApiError          a request refused at the boundary (a body too large, a wrong content
    │                     type, JSON that does not parse): carries its HTTP status and code
    ├── TokenError        no valid access token (401) or not the right one (403)   app.auth
    └── ConfigError       a configuration problem (also a ValueError)               app.config

The engine's errors (:class:`crdt.CrdtError`) stay its own; :mod:`app.http.errors` is the one
place where both trees become HTTP answers.
"""

from __future__ import annotations

__all__ = ["ApiError", "MeridianError"]


class MeridianError(Exception):
    """Root of the node's errors."""


class ApiError(MeridianError):
    """An error answer decided at the HTTP boundary."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
