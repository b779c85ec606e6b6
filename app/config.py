"""Configuration: the cluster topology file (``regions.toml``) and a node's own settings.

The file is parsed once into frozen dataclasses. Every key is documented in
docs/configuration.md (a test fails when one is not); an unknown key, a wrong type or a
value out of range is a :class:`ConfigError` naming the key and the problem.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from crdt import StoreLimits

from .errors import MeridianError

__all__ = [
    "DEFAULT_SECRET_ENV",
    "ClientLimits",
    "ClusterConfig",
    "ConfigError",
    "HttpLimits",
    "Member",
    "NodeSettings",
    "Region",
    "ReplicationConfig",
    "load_config",
    "is_loopback",
    "parse_config",
    "parse_listen",
]

DEFAULT_SECRET_ENV = "MERIDIAN_CLUSTER_SECRET"

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)", re.IGNORECASE)


class ConfigError(MeridianError, ValueError):
    """A configuration problem; the message names the file, the key and what is wrong."""


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    #: Seed node addresses ("host:port") of this region.
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Member:
    """A node of the cluster as ``regions.toml`` lists it; its id is ``<region>-<n>``, n
    counting from 1 in the order of the region's ``nodes``."""

    node_id: str
    region: str
    address: str


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Peer links, anti-entropy and durability waits; all times in seconds."""

    #: How often a link sends a heartbeat (which also measures the round-trip time).
    heartbeat_interval: float = 1.0
    #: A link that received nothing for this long is closed and dialled again.
    link_timeout: float = 5.0
    #: A peer whose link received nothing for this long (heartbeats included) is suspected:
    #: requests and writes go to other copies meanwhile; nothing moves (only a removal does).
    suspect_after: float = 2.5
    #: ...and once the silence is that long, the failure detector's phi must also reach this
    #: (app/replication/detector.py): a link whose heartbeats arrive irregularly waits longer.
    phi_threshold: float = 8.0
    #: How long opening a link (TCP, WebSocket upgrade) may take before it is retried.
    connect_timeout: float = 1.0
    #: Reconnection backoff: first delay and cap (doubling, with jitter).
    reconnect_min: float = 0.1
    reconnect_max: float = 0.5
    #: Time between anti-entropy rounds on each link (one also runs when a link opens).
    anti_entropy_interval: float = 10.0
    #: Bytes of deltas queued for one peer; past it the oldest are left to anti-entropy.
    max_outbox_bytes: int = 16 * 1024 * 1024
    #: Deltas sent to one peer and not yet acknowledged, at most.
    max_in_flight: int = 512
    #: How long a write with durability above ``local`` waits by default (``timeout=``).
    durability_timeout: float = 5.0
    #: How long a read with ``after=`` waits for this node's copy to catch up.
    after_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Limits of the client WebSocket endpoints (``/v1/sync``, ``/v1/docs/{id}/events``)."""

    #: Client WebSocket connections one node holds at most (1013 beyond).
    max_connections: int = 16384
    #: Largest message a client may send, in bytes (1009 beyond).
    max_message_bytes: int = 4 * 1024 * 1024
    #: Bytes queued for one client at most; a client that falls further behind is
    #: disconnected (1013) and resyncs when it reconnects.
    max_buffer_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    #: Largest request body accepted, in bytes (413 above).
    max_body_bytes: int = 4 * 1024 * 1024
    #: Most documents one list request returns.
    max_list_limit: int = 1000


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The whole ``regions.toml``."""

    name: str = "meridian"
    secret_env: str = DEFAULT_SECRET_ENV
    regions: dict[str, Region] = field(default_factory=dict)
    #: One-way latency in milliseconds between two regions, keyed by the sorted pair.
    latencies_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    #: How many regions hold a document by default.
    replicas: int = 2
    #: How many nodes of each of its regions hold a document (rendezvous hashing picks them).
    nodes_per_region: int = 1
    #: Seconds a request forwarded to a holder may take, beyond the waits it asks for.
    forward_timeout: float = 10.0
    #: Documents per second one node moves (pulls of documents it newly holds, hand-offs of
    #: copies it no longer does): rebalancing yields to the foreground.
    move_rate: float = 200.0
    #: Copies follow readers: on, the decayed reads that gain one, their half-life, and the
    #: idle time after which a follower copy is dropped.
    followers: bool = True
    follow_reads: int = 20
    follow_half_life: float = 60.0
    follow_idle: float = 600.0
    #: Homes move toward readers: on, the decayed accesses under which a home region is cold,
    #: and how long a follower copy elsewhere must have been in use before the home moves.
    rehome: bool = True
    rehome_reads: float = 5.0
    rehome_after: float = 600.0
    limits: StoreLimits = field(default_factory=StoreLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    clients: ClientLimits = field(default_factory=ClientLimits)
    #: ``auth.required``: clients need an access token (app.auth). None: no [auth] section,
    #: which only a node listening on loopback may run with (see ``meridian serve``).
    auth_required: bool | None = None
    source: str = "<defaults>"

    def members(self) -> list[Member]:
        """Every node listed under [regions], in file order."""
        return [
            Member(f"{region.name}-{index}", region.name, address)
            for region in self.regions.values()
            for index, address in enumerate(region.nodes, start=1)
        ]

    def latency_ms(self, a: str, b: str) -> float | None:
        if a == b:
            return 0.0
        return self.latencies_ms.get((min(a, b), max(a, b)))


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """What one ``meridian serve`` process is started with."""

    node_id: str
    region: str
    host: str
    port: int
    data_dir: Path
    cluster: ClusterConfig
    #: The cluster secret (from the environment variable ``cluster.secret_env``); peer links
    #: need it. None: this node replicates with nobody.
    secret: bytes | None = None
    #: Dial these nodes at these addresses instead of the listed ones (e.g. through the demo's
    #: WAN emulator): node id -> "host:port".
    peer_addresses: dict[str, str] = field(default_factory=dict)
    #: Not one of the listed nodes, whatever its id (replicates with nobody).
    standalone: bool = False
    #: Clients need an access token signed with ``secret`` (app.auth); decided by
    #: ``meridian serve`` from ``auth.required``, the listen address and ``--insecure``.
    auth_required: bool = False
    #: Speak at most this peer protocol version (None: the newest this code speaks); set by
    #: ``meridian serve --max-protocol-version`` to hold a new version back during an upgrade.
    max_protocol_version: int | None = None
    #: Join a running cluster through these nodes (``host:port``; ``meridian serve --join``)
    #: unless this node is already a member. Empty: the nodes regions.toml lists are the seeds
    #: when ``joins`` is set.
    join: tuple[str, ...] = ()
    #: This node is not listed in regions.toml and joins (or has joined) the cluster.
    joins: bool = False
    #: The address peers reach this node at (``--advertise``; default: host and bound port).
    advertise: str | None = None
    #: This node's relative share of its region's documents when it joins (``--weight``).
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.auth_required and not self.secret:
            raise ConfigError(
                "access tokens are signed with the cluster secret: set the environment "
                f"variable {self.cluster.secret_env}"
            )

    def member(self) -> Member | None:
        """This node's entry in ``regions.toml``, or None when it is not listed (a
        standalone node)."""
        if self.standalone:
            return None
        for member in self.cluster.members():
            if member.node_id == self.node_id:
                return member
        return None

    @property
    def address(self) -> str:
        """Where peers reach this node: ``--advertise``, else the listen address."""
        if self.advertise:
            return self.advertise
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def seeds(self) -> tuple[str, ...]:
        """The addresses a joining node asks to join through: ``--join``'s, else every node
        regions.toml lists."""
        return self.join or tuple(m.address for m in self.cluster.members())

    def peers(self) -> list[Member]:
        """The nodes this node replicates with: every other listed node (when it is listed)."""
        if self.member() is None:
            return []
        return [m for m in self.cluster.members() if m.node_id != self.node_id]


#: Section -> key -> (type, documented meaning). The source of truth for validation.
SCHEMA: dict[str, dict[str, type]] = {
    "cluster": {"name": str, "secret_env": str},
    "auth": {"required": bool},
    "placement": {
        "replicas": int,
        "nodes_per_region": int,
        "forward_timeout": float,
        "move_rate": float,
        "followers": bool,
        "follow_reads": int,
        "follow_half_life": float,
        "follow_idle": float,
        "rehome": bool,
        "rehome_reads": float,
        "rehome_after": float,
    },
    "limits": {
        "max_body_bytes": int,
        "max_document_bytes": int,
        "max_operations": int,
        "max_list_limit": int,
        "max_pending_bytes": int,
    },
    "storage": {
        "max_hot_documents": int,
        "max_hot_bytes": int,
        "compact_after_updates": int,
        "max_batch": int,
        "duckdb_memory_limit": str,
    },
    "clients": {
        "max_connections": int,
        "max_message_bytes": int,
        "max_buffer_bytes": int,
    },
    "replication": {
        "heartbeat_interval": float,
        "link_timeout": float,
        "suspect_after": float,
        "phi_threshold": float,
        "connect_timeout": float,
        "reconnect_min": float,
        "reconnect_max": float,
        "anti_entropy_interval": float,
        "max_outbox_bytes": int,
        "max_in_flight": int,
        "durability_timeout": float,
        "after_timeout": float,
    },
}


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address {value!r} must be host:port, e.g. 127.0.0.1:7201")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for a listen host only this machine can reach: ``localhost``, 127.0.0.0/8,
    ``::1`` (and IPv4-mapped loopback)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _expect(source: str, key: str, value: Any, kind: type) -> Any:
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "a number" if key.endswith(("_reads", "_rate")) else "a number of seconds"
            raise ConfigError(f"{source}: {key} must be {what}, got {value!r}")
        value = float(value)
    if kind in (int, float) and value <= 0:
        raise ConfigError(f"{source}: {key} must be positive, got {value}")
    return value


def parse_config(data: dict[str, Any], source: str = "<config>") -> ClusterConfig:
    """Builds a :class:`ClusterConfig` from parsed TOML; raises :class:`ConfigError`."""
    known = {*SCHEMA, "regions", "latency"}
    for section in data:
        if section not in known:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {sorted(known)})")
    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"{source}: unknown key {section}.{key} (known: {sorted(keys)})")
            values.setdefault(section, {})[key] = _expect(
                source, f"{section}.{key}", value, keys[key]
            )
    cluster = values.get("cluster", {})
    memory = values.get("storage", {}).get("duckdb_memory_limit")
    if memory is not None and not _SIZE.fullmatch(memory):
        raise ConfigError(
            f"{source}: storage.duckdb_memory_limit must be a size like '256MB', got {memory!r}"
        )
    if "name" in cluster and not _NAME.fullmatch(cluster["name"]):
        raise ConfigError(f"{source}: cluster.name must be lowercase letters, digits and '-'")
    if "secret_env" in cluster and not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_]*", cluster["secret_env"]
    ):
        raise ConfigError(f"{source}: cluster.secret_env must be an environment variable name")

    raw_regions = data.get("regions", {})
    if not isinstance(raw_regions, dict):
        raise ConfigError(f"{source}: [regions] must be a table of regions")
    regions: dict[str, Region] = {}
    seen: set[str] = set()
    for name, table in raw_regions.items():
        where = f"regions.{name}"
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{source}: region name {name!r} must be lowercase letters, digits, '-'"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{where}] must be a table")
        for key in table:
            if key != "nodes":
                raise ConfigError(f"{source}: unknown key {where}.{key} (known: ['nodes'])")
        nodes = table.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ConfigError(f'{source}: {where}.nodes must be a list of "host:port" strings')
        for node in nodes:
            try:
                parse_listen(node)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {where}.nodes: {exc}") from None
            if node in seen:
                raise ConfigError(f"{source}: {where}.nodes: {node} is listed twice")
            seen.add(node)
        regions[name] = Region(name, tuple(nodes))

    latencies: dict[tuple[str, str], float] = {}
    raw_latency = data.get("latency", {})
    if not isinstance(raw_latency, dict):
        raise ConfigError(f'{source}: [latency] must be a table of "a:b" = milliseconds')
    for pair, value in raw_latency.items():
        a, sep, b = pair.partition(":")
        if not sep or a not in regions or b not in regions or a == b:
            raise ConfigError(
                f'{source}: latency key {pair!r} must be "region:region" of two different '
                f"regions defined under [regions]"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{source}: latency.{pair} must be a non-negative number of ms")
        latencies[(min(a, b), max(a, b))] = float(value)

    limits = values.get("limits", {})
    storage = values.get("storage", {})
    store_keys = {f.name for f in fields(StoreLimits)}
    http_keys = {f.name for f in fields(HttpLimits)}
    given = {**limits, **storage}
    return ClusterConfig(
        name=cluster.get("name", "meridian"),
        secret_env=cluster.get("secret_env", DEFAULT_SECRET_ENV),
        regions=regions,
        latencies_ms=latencies,
        replicas=values.get("placement", {}).get("replicas", 2),
        nodes_per_region=values.get("placement", {}).get("nodes_per_region", 1),
        forward_timeout=values.get("placement", {}).get("forward_timeout", 10.0),
        **{
            key: values.get("placement", {})[key]
            for key in (
                "move_rate",
                "followers",
                "follow_reads",
                "follow_half_life",
                "follow_idle",
                "rehome",
                "rehome_reads",
                "rehome_after",
            )
            if key in values.get("placement", {})
        },
        limits=StoreLimits(**{k: v for k, v in given.items() if k in store_keys}),
        http=HttpLimits(**{k: v for k, v in given.items() if k in http_keys}),
        replication=_replication(values.get("replication", {}), source),
        clients=ClientLimits(**values.get("clients", {})),
        # An [auth] section asks for tokens unless it says required = false.
        auth_required=values.get("auth", {}).get("required", True) if "auth" in data else None,
        source=source,
    )


def _replication(values: dict[str, Any], source: str) -> ReplicationConfig:
    config = ReplicationConfig(**values)
    if config.reconnect_min > config.reconnect_max:
        raise ConfigError(f"{source}: replication.reconnect_min must be <= reconnect_max")
    if config.link_timeout <= config.heartbeat_interval:
        raise ConfigError(
            f"{source}: replication.link_timeout must be longer than heartbeat_interval"
        )
    if config.suspect_after <= config.heartbeat_interval:
        raise ConfigError(
            f"{source}: replication.suspect_after must be longer than heartbeat_interval"
        )
    return config


def load_config(path: Path) -> ClusterConfig:
    """Reads and validates a topology file; raises :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): TOML is UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))
