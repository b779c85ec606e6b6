"""The release of this code (``meridian --version``, ``GET /v1/health``, metrics labels)."""

VERSION = "0.1.0"
