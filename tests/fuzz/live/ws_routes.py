"""Generators of WebSocket sessions: y-websocket frames on ``/v1/sync/{id}``, anything on
``/v1/docs/{id}/events``, handshake frames on ``/v1/peer``; and, for each, now and then a
handshake and frames written by hand (:class:`~.wire.RawWs`): any opcode, reserved bits,
unmasked frames, lengths that lie, compressed frames."""

from __future__ import annotations

import base64
import re
import struct
import urllib.parse
import zlib
from collections.abc import Callable

from app.auth import SUBPROTOCOL_PREFIX, token_from_websocket
from app.replication import messages
from app.sync import protocol as sync

from .actions import Action, Frame, RawWs, WsSession
from .base import Base
from .content import awareness_update, random_update, state_vector
from .mutate import HUGE_VARINTS

__all__ = ["WsRoutes"]

#: An HTTP token (RFC 9110 tchar): what a subprotocol may be.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class WsRoutes(Base):
    """The WebSocket generators; :attr:`routes` maps ``WS /path`` to one."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.routes: dict[str, Callable[[], Action]] = {
            "WS /v1/sync/{doc_id}": self.sync,
            "WS /v1/docs/{doc_id}/events": self.events,
            "WS /v1/peer": self.peer,
        }

    # -- handshakes -------------------------------------------------------------------------

    def _handshake(self, target: str) -> tuple[list[tuple[str, str]], list[str], str]:
        """Headers, subprotocols and the query to add to ``target`` of a handshake, with a
        token in one of the three places a client may put it (auth on)."""
        m = self.m
        headers: list[tuple[str, str]] = []
        subprotocols: list[str] = []
        query = ""
        if self.tokens is not None and m.chance(0.9):
            token = self.tokens.pick(m)
            printable = token is not None and all(33 <= ord(c) < 127 for c in token)
            # A subprotocol is an HTTP token: the client refuses anything else.
            tchar = token is not None and _TOKEN.fullmatch(SUBPROTOCOL_PREFIX + token)
            place = m.rng.randrange(3)
            if token is not None and printable and place == 0:
                headers.append(("Authorization", "Bearer " + token))
            elif token is not None and tchar and place == 1:
                subprotocols.append(SUBPROTOCOL_PREFIX + token)
            elif token is not None:
                query = "token=" + urllib.parse.quote(token, safe="")
        if m.chance(0.2):
            subprotocols.append(m.pick(("y-websocket", "x" * 200, "meridian.token.")))
        if m.chance(0.1):
            headers.append(
                (
                    "X-Meridian-Forwarded",
                    _printable(self.forwarded("GET", target.encode(), valid=False)),
                )
            )
        if m.chance(0.1):
            headers.append(("Origin", "http://evil.example"))
        return headers, subprotocols, query

    def _grant(
        self, headers: list[tuple[str, str]], subprotocols: list[str], query: str, doc: str
    ) -> tuple[bool, bool]:
        """(may read, may write) ``doc`` with this handshake, as the node decides it."""
        if self.tokens is None:
            return True, True
        scope = {
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            "subprotocols": subprotocols,
            "query_string": query.encode(),
        }
        token, _ = token_from_websocket(scope)
        authorization = f"Bearer {token}" if token else None
        return (
            self.tokens.allows(authorization, doc, "read"),
            self.tokens.allows(authorization, doc, "write"),
        )

    # -- /v1/sync ---------------------------------------------------------------------------

    def _sync_frame(self, doc: str | None) -> Frame:
        m = self.m
        roll = m.rng.randrange(24)
        whole, later = random_update(m.rng)
        if roll < 3:
            vector = state_vector(m, self.setting.vectors)
            return Frame("binary", sync.encode_sync_step1(vector))
        if roll < 8:
            update = m.pick((whole, whole, later, b"\x00\x00"))
            if doc is not None and self.oracle.states.get(doc) and m.chance(0.3):
                update = self.oracle.states[doc] or update  # a duplicate of the seeded state
            encode = m.pick((sync.encode_sync_step2, sync.encode_update))
            return Frame("binary", encode(update))
        if roll < 11:
            return Frame("binary", sync.encode_awareness(awareness_update(m)))
        if roll < 12:
            return Frame("binary", b"\x03")
        if roll < 17:
            valid = m.pick(
                (
                    sync.encode_update(whole),
                    sync.encode_sync_step1(b"\x00"),
                    sync.encode_awareness(awareness_update(m)),
                )
            )
            return Frame("binary", m.bytes_(valid))
        if roll < 18:
            return Frame(
                "binary",
                m.pick(
                    (
                        sync.encode_permission_denied("no"),
                        b"\x07\x00",
                        sync.encode_update(whole) + b"\x00",
                        b"\x00\x02" + m.pick(HUGE_VARINTS) + whole,
                        b"\x01" + m.pick(HUGE_VARINTS),
                        b"",
                        b"\x00\x03\x00",
                    )
                ),
            )
        if roll < 19:
            return Frame("text", m.pick((b"hello", b"\xff\xfe\xfd", b"\xed\xa0\x80", b"{}")))
        if roll < 20:
            size = self.setting.max_message + m.pick((1, 1000))
            return Frame("binary", sync.encode_update(b"\x00" * size))
        if roll < 22:
            data = sync.encode_update(whole)
            cuts = sorted(m.rng.randrange(len(data) + 1) for _ in range(m.rng.randrange(1, 4)))
            return Frame("fragments", data, cuts)
        return Frame("binary", m.random_bytes())

    def sync(self) -> Action:
        m = self.m
        if m.chance(0.15):
            return self._raw("WS /v1/sync/{doc_id}", "/v1/sync/", seeded=False)
        doc = self.pick_doc(seeded=0.35, bad=0.1)
        frames = [self._sync_frame(doc) for _ in range(m.rng.randrange(1, 8))]
        segment = self.segment(doc)
        target = "/v1/sync/" + _ascii(segment)
        headers, subprotocols, query = self._handshake(target)
        forged = any(name == "X-Meridian-Forwarded" for name, _ in headers)
        instead = self.fuzz_doc()  # drawn whatever the decision below (see Base.seal)
        if self.is_seeded(doc):
            assert doc is not None
            _, can_write = self._grant(headers, subprotocols, query, doc)
            changes = any(self.oracle.frame_changes(doc, frame.data) for frame in frames)
            if changes and can_write and not forged:
                # It could write to a seeded document: a fuzz document takes it instead.
                doc = instead
                target = "/v1/sync/" + doc
        if query:
            target += "?" + query
        return WsSession(
            "WS /v1/sync/{doc_id}",
            target,
            headers,
            subprotocols,
            frames,
            expect="read" if self.is_seeded(doc) else "write",
            doc=doc,
            probe=m.chance(0.8),
            close_code=m.pick((1000, 1000, 1001, 3000, 4000, 4999)),
        )

    # -- /v1/docs/{id}/events ---------------------------------------------------------------

    def events(self) -> Action:
        m = self.m
        if m.chance(0.15):
            return self._raw("WS /v1/docs/{doc_id}/events", "/v1/docs/", seeded=True)
        doc = self.pick_doc(seeded=0.4, bad=0.1)
        segment = self.segment(doc)
        target = "/v1/docs/" + _ascii(segment) + "/events"
        headers, subprotocols, query = self._handshake(target)
        params = [query] if query else []
        since = m.chance(0.3)
        if since:
            vector = base64.b64encode(state_vector(m, self.setting.vectors)).decode()
            if m.chance(0.3):
                vector = m.pick(("!!", "%", "A" * 70000, vector[:-1]))
            params.append("since=" + urllib.parse.quote(vector, safe=""))
        if params:
            target += "?" + "&".join(params)
        frames = [
            Frame(
                m.pick(("binary", "text")),  # type: ignore[arg-type]
                m.random_bytes(m.pick((0, 10, 100, 4096, 5000))),
            )
            for _ in range(m.rng.randrange(0, 3))
        ]
        snapshot = None
        readable = doc is not None and self._grant(headers, subprotocols, query, doc)[0]
        if (
            doc in self.setting.seeded
            and not since
            and not frames
            and readable
            and segment == (doc or "").encode()
            and not any(name == "X-Meridian-Forwarded" for name, _ in headers)
        ):
            snapshot = self.setting.contents[doc]
        return WsSession(
            "WS /v1/docs/{doc_id}/events",
            target,
            headers,
            subprotocols,
            frames,
            doc=doc,
            close_code=m.pick((1000, 1001, 4000)),
            snapshot=snapshot,
        )

    # -- /v1/peer ---------------------------------------------------------------------------

    def _peer_frame(self) -> Frame:
        m = self.m
        low, high = m.pick(((1, 5), (1, 1), (5, 5), (6, 9), (0, 0), (3, 1), (1, 2**32)))
        hello = messages.Hello(
            min(low, 2**32),
            min(high, 2**32),
            m.pick(("meridian-local", "fuzz", "")),
            m.pick(("eu-west-9", self.setting.node_id, "x" * 128)),
            m.pick(("eu-west", "mars")),
            m.pick(("s1", "")),
            bytes(m.rng.randrange(256) for _ in range(32)),
        )
        try:
            valid = messages.encode(hello)
        except (ValueError, OverflowError):
            valid = b"\x01MRDN"
        roll = m.rng.randrange(8)
        if roll < 3:
            return Frame("binary", valid)
        if roll < 6:
            return Frame("binary", m.bytes_(valid))
        if roll < 7:
            other = m.pick(
                (
                    messages.Auth(bytes(32)),
                    messages.Ping(1),
                    messages.Refuse("x", "y"),
                    messages.Ready(),
                )
            )
            return Frame("binary", messages.encode(other))
        return Frame(m.pick(("binary", "text")), m.random_bytes())  # type: ignore[arg-type]

    def peer(self) -> Action:
        m = self.m
        if m.chance(0.15):
            return self._raw("WS /v1/peer", "/v1/peer", seeded=False)
        frames = [self._peer_frame() for _ in range(m.rng.randrange(1, 4))]
        headers = [("X-Junk", "1")] if m.chance(0.2) else []
        return WsSession(
            "WS /v1/peer", "/v1/peer", headers, [], frames, close_code=m.pick((1000, 1001))
        )

    # -- hand-written handshakes and frames ---------------------------------------------------

    def _raw(self, route: str, prefix: str, *, seeded: bool) -> RawWs:
        """A handshake with mutated headers, then frames of any shape. The documents are
        fuzz ones (or invalid ids), except for the events stream (read-only)."""
        m = self.m
        if prefix == "/v1/peer":
            path, doc = b"/v1/peer", None
        else:
            doc = self.pick_doc(seeded=0.4 if seeded else 0.0, bad=0.2)
            suffix = b"/events" if route.endswith("events") else b""
            path = prefix.encode() + self.segment(doc) + suffix
        key = base64.b64encode(bytes(m.rng.randrange(256) for _ in range(16)))
        lines = [
            b"GET " + path + b" HTTP/1.1",
            b"Upgrade: " + m.pick((b"websocket", b"websocket", b"WebSocket", b"h2c", b"")),
            b"Connection: " + m.pick((b"Upgrade", b"keep-alive, Upgrade", b"close")),
            b"Sec-WebSocket-Key: " + m.pick((key, key, key[:10], b"", b"!" * 24)),
            b"Sec-WebSocket-Version: " + m.pick((b"13", b"13", b"8", b"", b"99")),
        ]
        deflate = m.chance(0.3)
        if deflate:
            lines.append(b"Sec-WebSocket-Extensions: permessage-deflate")
        if m.chance(0.2):
            lines.append(b"Sec-WebSocket-Protocol: " + m.pick((b"y", b"a, b, c", b"\xff" * 10)))
        if self.tokens is not None:
            lines.append(b"Authorization: Bearer " + self.tokens.admin.encode())
        request = b"\r\n".join(lines) + b"\r\n\r\n"
        frames = [self._raw_frame(deflate) for _ in range(m.rng.randrange(1, 5))]
        return RawWs(route, request, frames, expect="read", doc=doc)

    def _raw_frame(self, deflate: bool) -> bytes:
        m = self.m
        payload = m.pick(
            (
                sync.encode_sync_step1(b"\x00"),
                sync.encode_awareness(awareness_update(m)),
                m.random_bytes(),
                b"\xff\xfe",
                struct.pack("!H", m.pick((1000, 999, 1005, 1006, 1011, 2999, 5000))) + b"\xff",
            )
        )
        opcode = m.pick((0x0, 0x1, 0x2, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF))
        fin = m.chance(0.85)
        rsv = m.pick((0, 0, 0, 0x40, 0x20, 0x10))
        if deflate and m.chance(0.5):
            rsv = 0x40
            compressor = zlib.compressobj(wbits=-15)
            bomb = b"\x00" * m.pick((1000, 10_000_000))
            data = m.pick((payload, bomb))
            payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            payload = payload[:-4] if payload.endswith(b"\x00\x00\xff\xff") else payload
        masked = m.chance(0.9)
        length = len(payload)
        lie = m.chance(0.1)
        if lie:
            length = m.pick((length + 10, 2**16, 2**63 - 1, 126, 127))
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        mask_bit = 0x80 if masked else 0
        if length < 126:
            head += bytes([mask_bit | length])
        elif length < 2**16:
            head += bytes([mask_bit | 126]) + struct.pack("!H", length)
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
        if masked:
            mask = bytes(m.rng.randrange(256) for _ in range(4))
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            head += mask
        return head + payload


def _ascii(segment: bytes) -> str:
    """A path segment the ``websockets`` client can put in a URL (it refuses raw non-ASCII
    bytes; those go through the hand-written handshakes)."""
    return urllib.parse.quote(segment, safe="%:._-~") if not segment.isascii() else segment.decode()


def _printable(value: bytes) -> str:
    """A header value the ``websockets`` client sends as is (printable ASCII)."""
    return "".join(chr(b) for b in value if 32 <= b < 127)
