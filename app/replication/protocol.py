"""The peer protocol as a state machine without I/O: frames in, events and frames out.

Feed each received WebSocket frame to :meth:`PeerProtocol.receive_data`, then read
:meth:`PeerProtocol.events_received` and send every frame of :meth:`PeerProtocol.data_to_send`
(the transport around it, :mod:`app.replication.link`, is a thin loop doing just that).

Handshake (the dialer is the node with the smaller id)::

    dialer                                    acceptor
    Hello(versions, cluster, node, nonce_d) →
                                            ← Welcome(version, node, nonce_a, proof_a)
    Auth(proof_d)                           →
                                            ← Ready

``proof_a = HMAC-SHA256(secret, "acceptor", cluster, nonce_d, nonce_a, dialer, acceptor)``
(each part length-prefixed) and ``proof_d`` the same with ``"dialer"``: each side proves it
knows the cluster secret for nonces the other chose, the secret itself never crosses the
wire, and a proof cannot be replayed or reflected (the role is part of what is signed).
Any problem ends the link with a :class:`~app.replication.messages.Refuse` naming it:
``wrong_cluster``, ``incompatible_version``, ``unknown_node``, ``authentication_failed``,
``protocol_error``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from . import messages as m

__all__ = [
    "MEMBERS_VERSION",
    "PLACEMENT_VERSION",
    "PROTOCOL_VERSIONS",
    "Closed",
    "Event",
    "Heartbeat",
    "Identity",
    "Opened",
    "PeerInfo",
    "PeerProtocol",
    "Received",
    "RoundTrip",
    "State",
]

#: The protocol versions this code speaks (lowest, highest). Version 2 adds Awareness;
#: version 3 adds placement (records, the catalog feed; a node holds only its documents);
#: version 4 lets a placement record carry a moved home (homes follow readers); version 5
#: gossips the member list (Members); version 6 lets a placement record carry the highest
#: deleted incarnation of its document.
PROTOCOL_VERSIONS = (1, 6)
#: The first version with placement: a peer below it holds every document.
PLACEMENT_VERSION = 3
#: The first version whose nodes read a record's moved home (a version-3 node refuses such a
#: record): no home moves while any peer may be below it.
REHOME_VERSION = 4
#: The first version that gossips the member list: a peer below it is sent none.
MEMBERS_VERSION = 5
#: The first version whose nodes read a record's deleted incarnation (an older node refuses
#: such a record): no record gets one while any peer may be below it.
DELETED_VERSION = 6

Role = Literal["dialer", "acceptor"]


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node is, and the cluster secret it proves it knows."""

    cluster: str
    node: str
    region: str
    storage_id: str
    secret: bytes


@dataclass(frozen=True, slots=True)
class PeerInfo:
    node: str
    region: str
    storage_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Opened:
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class Received:
    """An application message from the open link."""

    message: m.Message


@dataclass(frozen=True, slots=True)
class RoundTrip:
    seconds: float


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The peer's heartbeat (a Ping) arrived at monotonic time ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Closed:
    """The link is over; the transport closes the connection. ``by_peer`` tells whether the
    peer refused or closed it (its reason is then the peer's words)."""

    code: str
    reason: str
    by_peer: bool


Event = Opened | Received | RoundTrip | Heartbeat | Closed

# Messages only the handshake may carry.
_HANDSHAKE = (m.Hello, m.Welcome, m.Auth, m.Ready)


class PeerProtocol:
    """One peer link's protocol state. ``admit(node, region)`` (acceptor) returns None to
    admit a node or the reason to refuse it; ``expected_node`` (dialer) is who it dials."""

    def __init__(
        self,
        role: Role,
        identity: Identity,
        *,
        expected_node: str | None = None,
        admit: Callable[[str, str], str | None] | None = None,
        versions: tuple[int, int] = PROTOCOL_VERSIONS,
        clock: Callable[[], float] = time.monotonic,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.role = role
        self.identity = identity
        self.versions = versions
        self._expected_node = expected_node
        self._admit = admit
        self._clock = clock
        self.state = State.HANDSHAKE
        #: Who the peer is, once the handshake got that far.
        self.peer: PeerInfo | None = None
        #: When the last frame arrived (heartbeat timeouts read it).
        self.last_received = clock()
        self._nonce = random_bytes(m.NONCE_BYTES)
        # The dialer's nonce, known to both sides after Hello.
        self._dialer_nonce = self._nonce if role == "dialer" else b""
        self._acceptor_nonce = self._nonce if role == "acceptor" else b""
        # What the handshake expects next.
        self._expecting: type[m.Message] = m.Welcome if role == "dialer" else m.Hello
        self._events: list[Event] = []
        self._out: list[bytes] = []

    # -- the sans-I/O interface ---------------------------------------------------------

    def start(self) -> None:
        """Dialer: queues Hello."""
        assert self.role == "dialer" and self.state is State.HANDSHAKE
        ident = self.identity
        low, high = self.versions
        self._queue(
            m.Hello(
                low, high, ident.cluster, ident.node, ident.region, ident.storage_id, self._nonce
            )
        )

    def receive_data(self, frame: bytes) -> None:
        """Handles one received frame. Never raises for anything the peer sends: problems
        close the link (a Closed event and a Refuse frame naming the reason)."""
        if self.state is State.CLOSED:
            return
        self.last_received = self._clock()
        try:
            message = m.decode(frame)
        except m.ProtocolError as exc:
            self._fail("protocol_error", str(exc))
            return
        if isinstance(message, m.Refuse):
            self.state = State.CLOSED
            self._events.append(Closed(message.code, message.reason, by_peer=True))
        elif self.state is State.HANDSHAKE:
            self._handshake(message)
        elif isinstance(message, _HANDSHAKE):
            self._fail("protocol_error", f"{type(message).__name__} after the handshake")
        elif isinstance(message, m.Ping):
            self._queue(m.Pong(message.stamp))
            self._events.append(Heartbeat(self.last_received))
        elif isinstance(message, m.Pong):
            sent = message.stamp / 1e6
            now = self._clock()
            if 0 <= now - sent < 3600:
                self._events.append(RoundTrip(now - sent))
        else:
            self._events.append(Received(message))

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def send(self, message: m.Message) -> None:
        """Queues an application message; raises ProtocolError unless the link is open."""
        if self.state is not State.OPEN:
            raise m.ProtocolError(f"cannot send {type(message).__name__}: link {self.state.value}")
        self._queue(message)

    def ping(self) -> None:
        if self.state is State.OPEN:
            self._queue(m.Ping(int(self._clock() * 1e6)))

    def close(self, code: str, reason: str) -> None:
        """Ends the link from this side: queues a Refuse telling the peer why."""
        if self.state is State.CLOSED:
            return
        self._queue(m.Refuse(code, reason[: m.MAX_REASON]))
        self.state = State.CLOSED
        self._events.append(Closed(code, reason, by_peer=False))

    # -- the handshake ------------------------------------------------------------------

    def _handshake(self, message: m.Message) -> None:
        if not isinstance(message, self._expecting):
            self._fail(
                "protocol_error",
                f"expected {self._expecting.__name__} during the handshake, got "
                f"{type(message).__name__}",
            )
        elif isinstance(message, m.Hello):
            self._on_hello(message)
        elif isinstance(message, m.Welcome):
            self._on_welcome(message)
        elif isinstance(message, m.Auth):
            self._on_auth(message)
        elif isinstance(message, m.Ready):
            self._open()

    def _on_hello(self, hello: m.Hello) -> None:
        ident = self.identity
        if hello.cluster != ident.cluster:
            self._fail(
                "wrong_cluster", f"this node is in cluster {ident.cluster!r}, not {hello.cluster!r}"
            )
            return
        low, high = self.versions
        version = min(high, hello.max_version)
        if version < max(low, hello.min_version):
            self._fail(
                "incompatible_version",
                f"{ident.node} speaks peer protocol {low}..{high}, "
                f"{hello.node} speaks {hello.min_version}..{hello.max_version}",
            )
            return
        if hello.node == ident.node:
            self._fail("unknown_node", f"{hello.node} is this node's own id")
            return
        refusal = self._admit(hello.node, hello.region) if self._admit else None
        if refusal is not None:
            self._fail("unknown_node", refusal)
            return
        self.peer = PeerInfo(hello.node, hello.region, hello.storage_id, version)
        self._dialer_nonce = hello.nonce
        proof = self._proof("acceptor", dialer=hello.node, acceptor=ident.node)
        self._queue(
            m.Welcome(version, ident.node, ident.region, ident.storage_id, self._nonce, proof)
        )
        self._expecting = m.Auth

    def _on_welcome(self, welcome: m.Welcome) -> None:
        low, high = self.versions
        if not low <= welcome.version <= high:
            self._fail(
                "incompatible_version",
                f"{welcome.node} chose peer protocol {welcome.version}, "
                f"{self.identity.node} speaks {low}..{high}",
            )
            return
        if self._expected_node is not None and welcome.node != self._expected_node:
            self._fail("unknown_node", f"dialled {self._expected_node} but {welcome.node} answered")
            return
        self._acceptor_nonce = welcome.nonce
        expected = self._proof("acceptor", dialer=self.identity.node, acceptor=welcome.node)
        if not hmac.compare_digest(expected, welcome.proof):
            self._fail(
                "authentication_failed",
                f"{welcome.node} could not prove it knows the cluster secret",
            )
            return
        self.peer = PeerInfo(welcome.node, welcome.region, welcome.storage_id, welcome.version)
        self._queue(m.Auth(self._proof("dialer", dialer=self.identity.node, acceptor=welcome.node)))
        self._expecting = m.Ready

    def _on_auth(self, auth: m.Auth) -> None:
        assert self.peer is not None
        expected = self._proof("dialer", dialer=self.peer.node, acceptor=self.identity.node)
        if not hmac.compare_digest(expected, auth.proof):
            self._fail(
                "authentication_failed",
                f"{self.peer.node} could not prove it knows the cluster secret",
            )
            return
        self._queue(m.Ready())
        self._open()

    def _open(self) -> None:
        assert self.peer is not None
        self.state = State.OPEN
        self._events.append(Opened(self.peer))

    def _proof(self, role: Role, *, dialer: str, acceptor: str) -> bytes:
        parts = (
            b"meridian-peer",
            role.encode(),
            self.identity.cluster.encode(),
            self._dialer_nonce,
            self._acceptor_nonce,
            dialer.encode(),
            acceptor.encode(),
        )
        # Length-prefixed, so no two different sets of parts sign the same bytes.
        signed = b"".join(len(part).to_bytes(2, "big") + part for part in parts)
        return hmac.new(self.identity.secret, signed, hashlib.sha256).digest()

    # -- helpers ------------------------------------------------------------------------

    def _queue(self, message: m.Message) -> None:
        self._out.append(m.encode(message))

    def _fail(self, code: str, reason: str) -> None:
        self.close(code, reason)
