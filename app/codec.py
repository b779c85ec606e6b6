"""Base64 as the API speaks it: standard on the way out; standard or URL-safe, padded or
not, on the way in (state vectors, cursors)."""

from __future__ import annotations

import base64
import binascii

from .errors import ApiError

__all__ = ["b64", "close_reason", "decode_base64"]

#: RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of them the close code.
MAX_CLOSE_REASON_BYTES = 123


def decode_base64(value: str, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional; 400 when it is neither."""
    # A "+" that was not URL-encoded arrives as a space; base64 never contains one.
    cleaned = value.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"invalid_{what}", f"{what} is not valid base64") from exc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def close_reason(reason: str) -> str:
    """``reason`` cut to fit a WebSocket close frame (123 bytes of UTF-8), never inside a
    character: a longer reason makes the close frame itself fail, and the client then sees
    no close code at all."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."
